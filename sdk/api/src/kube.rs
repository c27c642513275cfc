//! Kubernetes' own kinds as views of Skiff's: a Skiff Pod is also a core
//! `v1` Pod with one container, a Deployment an `apps/v1` Deployment, and
//! so on. One stored object, two shapes: [`to_kube`] shows a stored
//! object in its Kubernetes shape, [`from_kube`] turns one written in that
//! shape back into Skiff's, refusing what Skiff does not have (a second
//! container, an init container, a privileged one) with the field and the
//! reason. Identity and versions are the stored object's in both.
//!
//! What Skiff has and Kubernetes does not travels in annotations of the
//! pod (or the pod template): `skiff.dev/fuel`, `skiff.dev/timeout`,
//! `skiff.dev/max-instances`, `skiff.dev/reserved-instances`,
//! `skiff.dev/runtime`, `skiff.dev/allow-outbound` (comma-separated), the
//! container's name in `skiff.dev/container-name`, and any other Skiff-only
//! field as JSON in `skiff.dev/spec`. Memory and CPU limits are
//! `resources.limits` as Kubernetes has them.

use serde_json::{Map, Value, json};

use crate::Kind;
use crate::validate::FieldError;

/// Skiff-only fields of a spec, as JSON.
pub const SPEC_ANNOTATION: &str = "skiff.dev/spec";
/// The container's name, which Skiff's one-container pods do not need.
pub const CONTAINER_NAME_ANNOTATION: &str = "skiff.dev/container-name";
/// The container's name when none was given.
pub const DEFAULT_CONTAINER: &str = "main";
/// Kubernetes fields a pod was written with that mean nothing here
/// (container ports, resource requests, DNS policy...), kept as JSON so
/// the object reads back as written: `kubectl apply` then finds nothing
/// to change.
pub const KEPT_ANNOTATION: &str = "skiff.dev/kubernetes-only";
/// Pod fields Kubernetes fills in or that mean nothing here: accepted,
/// kept for display, not acted on.
const IGNORED_POD_FIELDS: [&str; 8] = [
    "dnsPolicy",
    "schedulerName",
    "enableServiceLinks",
    "preemptionPolicy",
    "priorityClassName",
    "terminationGracePeriodSeconds",
    "hostname",
    "subdomain",
];
/// The revision a Deployment is at, as kubectl reads it.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// What a revision changed, as kubectl shows it in `rollout history`.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

/// Skiff's resources that are annotations in the Kubernetes shape.
const RESOURCE_ANNOTATIONS: [(&str, &str); 4] = [
    ("fuel", "skiff.dev/fuel"),
    ("timeout", "skiff.dev/timeout"),
    ("maxInstances", "skiff.dev/max-instances"),
    ("reservedInstances", "skiff.dev/reserved-instances"),
];
const RUNTIME_ANNOTATION: &str = "skiff.dev/runtime";
const OUTBOUND_ANNOTATION: &str = "skiff.dev/allow-outbound";

/// The group/version Kubernetes serves `kind` under, and the kind's name
/// there; `None` for kinds with no Kubernetes counterpart.
pub fn kube_kind(kind: Kind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        Kind::Deployment => ("apps/v1", "Deployment"),
        Kind::Route => ("networking.k8s.io/v1", "Ingress"),
        Kind::Pod => ("v1", "Pod"),
        Kind::Namespace => ("v1", "Namespace"),
        Kind::Node => ("v1", "Node"),
        Kind::Service => ("v1", "Service"),
        Kind::Secret => ("v1", "Secret"),
        Kind::ConfigMap => ("v1", "ConfigMap"),
        Kind::ResourceQuota => ("v1", "ResourceQuota"),
        Kind::ServiceAccount => ("v1", "ServiceAccount"),
        Kind::Event => ("v1", "Event"),
    })
}

/// The plural Kubernetes serves `kind` under, where it is not Skiff's.
pub fn kube_plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Route => "ingresses",
        other => other.plural(),
    }
}

/// The stored object `object` of `kind` in its Kubernetes shape.
pub fn to_kube(kind: Kind, mut object: Value) -> Value {
    let Some((api_version, name)) = kube_kind(kind) else {
        return object;
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(name);
    match kind {
        Kind::Pod => {
            let spec = object["spec"].take();
            let mut annotations = annotations_of(&object["metadata"]);
            object["spec"] = pod_spec_to_kube(&spec, &mut annotations);
            set_annotations(&mut object["metadata"], annotations);
            if object["status"].is_object() {
                let container = object["spec"]["containers"][0]["name"].clone();
                let image = object["spec"]["containers"][0]["image"].clone();
                pod_status_to_kube(&mut object["status"], container, image);
            }
        }
        Kind::Deployment => {
            let mut spec = object["spec"].take();
            let mut annotations = annotations_of(&object["metadata"]);
            let mut skiff_only = Map::new();
            for field in ["autoRollback", "autoscaling"] {
                if let Some(value) = spec.as_object_mut().and_then(|s| s.remove(field))
                    && !value.is_null()
                {
                    skiff_only.insert(field.into(), value);
                }
            }
            if !skiff_only.is_empty() {
                annotations.insert(
                    SPEC_ANNOTATION.into(),
                    json!(Value::Object(skiff_only).to_string()),
                );
            }
            if let Some(revision) = object["status"]["revision"].as_u64() {
                annotations.insert(REVISION_ANNOTATION.into(), json!(revision.to_string()));
            }
            set_annotations(&mut object["metadata"], annotations);
            spec["template"] = template_to_kube(&spec["template"]);
            object["spec"] = spec;
            if let Some(status) = object["status"].as_object_mut() {
                for field in ["revision", "stableRevision", "progressedAt", "history"] {
                    status.remove(field);
                }
                let replicas = status.get("replicas").and_then(Value::as_u64).unwrap_or(0);
                let available = status
                    .get("availableReplicas")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if replicas > available {
                    status.insert("unavailableReplicas".into(), json!(replicas - available));
                }
            }
        }
        Kind::Namespace => {
            let spec = object["spec"].take();
            let mut annotations = annotations_of(&object["metadata"]);
            if spec.as_object().is_some_and(|s| !s.is_empty()) {
                annotations.insert(SPEC_ANNOTATION.into(), json!(spec.to_string()));
            }
            set_annotations(&mut object["metadata"], annotations);
            object["spec"] = json!({});
        }
        Kind::Service => {
            let mut spec = object["spec"].take();
            let mut annotations = annotations_of(&object["metadata"]);
            if let Some(callers) = spec
                .as_object_mut()
                .and_then(|s| s.remove("allowedCallers"))
                && callers.as_array().is_some_and(|c| !c.is_empty())
            {
                annotations.insert(
                    SPEC_ANNOTATION.into(),
                    json!(json!({"allowedCallers": callers}).to_string()),
                );
            }
            set_annotations(&mut object["metadata"], annotations);
            if let Some(ports) = spec["ports"].as_array_mut() {
                for port in ports {
                    let tcp = port["protocol"] == "TCP";
                    port["protocol"] = json!("TCP");
                    if tcp {
                        port["appProtocol"] = json!("skiff.dev/tcp");
                    } else {
                        port["appProtocol"] = json!("http");
                    }
                }
            }
            spec["type"] = json!("ClusterIP");
            object["spec"] = spec;
        }
        Kind::Event => {
            if let Some((api_version, name)) = object["involvedObject"]["kind"]
                .as_str()
                .and_then(Kind::from_name)
                .and_then(kube_kind)
            {
                object["involvedObject"]["apiVersion"] = json!(api_version);
                object["involvedObject"]["kind"] = json!(name);
            }
        }
        Kind::Route => {
            let spec = object["spec"].take();
            let mut backend = json!({"service": {"name": spec["service"]}});
            if let Some(port) = spec["port"].as_u64() {
                backend["service"]["port"] = json!({"number": port});
            }
            let path = spec["path"]
                .as_str()
                .filter(|p| !p.is_empty())
                .unwrap_or("/");
            let mut rule = json!({"http": {"paths": [{"path": path, "pathType": "Prefix", "backend": backend}]}});
            if let Some(host) = spec["host"].as_str().filter(|h| !h.is_empty()) {
                rule["host"] = json!(host);
            }
            let mut kube_spec = json!({"rules": [rule]});
            let mut annotations = annotations_of(&object["metadata"]);
            let kept = take_kept(&mut annotations);
            // Only the class, in its own place (see pods' kept fields).
            if let Some(class) = kept["ingressClassName"].as_str() {
                kube_spec["ingressClassName"] = json!(class);
            }
            set_annotations(&mut object["metadata"], annotations);
            object["spec"] = kube_spec;
            drop_status(&mut object);
        }
        Kind::Node
        | Kind::Secret
        | Kind::ConfigMap
        | Kind::ResourceQuota
        | Kind::ServiceAccount => {}
    }
    object
}

/// What writing `object` (in `kind`'s Kubernetes shape) stores, and what
/// was accepted but means nothing here (for `Warning` headers); or every
/// field Skiff cannot take, with why.
pub fn from_kube(kind: Kind, mut object: Value) -> Result<(Value, Vec<String>), Vec<FieldError>> {
    well_formed(&object)?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if let Some((api_version, name)) = kube_kind(kind) {
        for (field, want) in [("apiVersion", api_version), ("kind", name)] {
            match object[field].as_str() {
                None | Some("") => {}
                Some(given) if given == want => {}
                Some(given) => errors.push(FieldError::new(
                    field,
                    format!("is `{given}`, but this path takes {api_version} {name}"),
                )),
            }
        }
    }
    object["apiVersion"] = json!(crate::API_VERSION);
    object["kind"] = json!(kind.name());
    match kind {
        Kind::Pod => {
            let mut annotations = annotations_of(&object["metadata"]);
            let spec = pod_spec_from_kube(
                &object["spec"],
                &mut annotations,
                "spec",
                &mut errors,
                &mut warnings,
            );
            set_annotations(&mut object["metadata"], annotations);
            object["spec"] = spec;
            // Written by the nodes alone.
            drop_status(&mut object);
        }
        Kind::Deployment => {
            let mut annotations = annotations_of(&object["metadata"]);
            annotations.remove(REVISION_ANNOTATION);
            let skiff_only =
                take_spec_annotation(&mut annotations, "metadata.annotations", &mut errors);
            set_annotations(&mut object["metadata"], annotations);
            let mut spec = object["spec"].take();
            if let Some(fields) = spec.as_object_mut() {
                match fields.remove("minReadySeconds") {
                    None | Some(Value::Null) => {}
                    Some(v) if v == json!(0) => {}
                    Some(_) => errors.push(FieldError::new(
                        "spec.minReadySeconds",
                        "is not supported: a pod counts as available once it is ready",
                    )),
                }
                for (key, value) in skiff_only {
                    fields.entry(key).or_insert(value);
                }
            }
            let template = template_from_kube(
                &spec["template"],
                "spec.template",
                &mut errors,
                &mut warnings,
            );
            spec["template"] = template;
            object["spec"] = spec;
            drop_status(&mut object);
        }
        Kind::Namespace => {
            let mut annotations = annotations_of(&object["metadata"]);
            let skiff_only =
                take_spec_annotation(&mut annotations, "metadata.annotations", &mut errors);
            set_annotations(&mut object["metadata"], annotations);
            object["spec"] = Value::Object(skiff_only);
        }
        Kind::Service => {
            let mut annotations = annotations_of(&object["metadata"]);
            let skiff_only =
                take_spec_annotation(&mut annotations, "metadata.annotations", &mut errors);
            set_annotations(&mut object["metadata"], annotations);
            let mut spec = object["spec"].take();
            service_spec_from_kube(&mut spec, &mut errors, &mut warnings);
            if let Some(fields) = spec.as_object_mut() {
                for (key, value) in skiff_only {
                    fields.entry(key).or_insert(value);
                }
            }
            object["spec"] = spec;
            drop_status(&mut object);
        }
        Kind::Event => {
            if object["involvedObject"]["apiVersion"].is_string() {
                object["involvedObject"]["apiVersion"] = json!(crate::API_VERSION);
            }
            // The one kind whose Kubernetes name is not Skiff's.
            if object["involvedObject"]["kind"] == "Ingress" {
                object["involvedObject"]["kind"] = json!(Kind::Route.name());
            }
        }
        Kind::Route => {
            let spec = object["spec"].take();
            let mut annotations = annotations_of(&object["metadata"]);
            annotations.remove(KEPT_ANNOTATION);
            if let Some(class) = spec["ingressClassName"].as_str() {
                annotations.insert(
                    KEPT_ANNOTATION.into(),
                    json!(json!({"ingressClassName": class}).to_string()),
                );
            }
            set_annotations(&mut object["metadata"], annotations);
            object["spec"] = route_from_ingress(&spec, &mut errors, &mut warnings);
            drop_status(&mut object);
        }
        Kind::Node
        | Kind::Secret
        | Kind::ConfigMap
        | Kind::ResourceQuota
        | Kind::ServiceAccount => {}
    }
    if errors.is_empty() {
        Ok((object, warnings))
    } else {
        Err(errors)
    }
}

/// Refuses what no conversion can work with: an object that is not a map,
/// or whose `metadata`, `spec` or a Deployment's `spec.template` (or its
/// `metadata` and `spec`) is there but not one.
pub fn well_formed(object: &Value) -> Result<(), Vec<FieldError>> {
    if !object.is_object() {
        return Err(vec![FieldError::new("body", "must be an object")]);
    }
    let mut errors = Vec::new();
    for (field, value) in [
        ("metadata", &object["metadata"]),
        ("spec", &object["spec"]),
        ("spec.template", &object["spec"]["template"]),
        (
            "spec.template.metadata",
            &object["spec"]["template"]["metadata"],
        ),
        ("spec.template.spec", &object["spec"]["template"]["spec"]),
    ] {
        if !value.is_null() && !value.is_object() {
            errors.push(FieldError::new(field, "must be an object"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A Deployment's revisions as `apps/v1` ReplicaSets, which is how kubectl
/// finds them (`rollout history`, `rollout undo`): one per revision it
/// keeps, owned by it, the current one with its replicas.
pub fn replica_sets(deployment: &Value) -> Vec<Value> {
    let meta = &deployment["metadata"];
    let current = deployment["status"]["revision"].as_u64();
    let name = meta["name"].as_str().unwrap_or_default();
    deployment["status"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|revision| {
            let number = revision["revision"].as_u64().unwrap_or(0);
            let hash = revision["templateHash"].as_str().unwrap_or_default();
            let mut template = template_to_kube(&revision["template"]);
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            let mut annotations = json!({REVISION_ANNOTATION: number.to_string()});
            if let Some(cause) = revision["changeCause"].as_str() {
                annotations[CHANGE_CAUSE_ANNOTATION] = json!(cause);
            }
            let replicas = if Some(number) == current {
                deployment["spec"]["replicas"].as_u64().unwrap_or(0)
            } else {
                0
            };
            let mut selector = deployment["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "namespace": meta["namespace"],
                    "uid": format!("{}-{number}", meta["uid"].as_str().unwrap_or_default()),
                    "resourceVersion": meta["resourceVersion"],
                    "creationTimestamp": revision["created"],
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": meta["uid"], "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "spec": {"replicas": replicas, "selector": selector, "template": template},
                "status": {"replicas": replicas, "observedGeneration": meta["generation"]},
            })
        })
        .collect()
}

/// What a `skiff.dev/kubernetes-only` annotation keeps (removed from the
/// annotations); `null` when there is none or it is not JSON.
fn take_kept(annotations: &mut Map<String, Value>) -> Value {
    annotations
        .remove(KEPT_ANNOTATION)
        .and_then(|k| k.as_str().and_then(|k| serde_json::from_str(k).ok()))
        .unwrap_or(Value::Null)
}

/// A status is written by Skiff's own components, never through a view.
fn drop_status(object: &mut Value) {
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
    }
}

fn annotations_of(meta: &Value) -> Map<String, Value> {
    meta["annotations"].as_object().cloned().unwrap_or_default()
}

fn set_annotations(meta: &mut Value, annotations: Map<String, Value>) {
    if annotations.is_empty() {
        if let Some(meta) = meta.as_object_mut() {
            meta.remove("annotations");
        }
    } else {
        meta["annotations"] = Value::Object(annotations);
    }
}

/// The Skiff-only fields a `skiff.dev/spec` annotation holds (removed).
fn take_spec_annotation(
    annotations: &mut Map<String, Value>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Map<String, Value> {
    let Some(text) = annotations.remove(SPEC_ANNOTATION) else {
        return Map::new();
    };
    match text.as_str().map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(fields))) => fields,
        _ => {
            errors.push(FieldError::new(
                &format!("{at}[{SPEC_ANNOTATION}]"),
                "must be a JSON object of Skiff spec fields",
            ));
            Map::new()
        }
    }
}

fn template_to_kube(template: &Value) -> Value {
    let mut template = template.clone();
    let mut annotations = annotations_of(&template["metadata"]);
    let spec = template["spec"].take();
    template["spec"] = pod_spec_to_kube(&spec, &mut annotations);
    set_annotations(&mut template["metadata"], annotations);
    template
}

fn template_from_kube(
    template: &Value,
    at: &str,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) -> Value {
    let mut template = template.clone();
    // Kubernetes' clients write a template's metadata with the fields of
    // any object's, empty (`creationTimestamp: null`).
    if let Some(meta) = template["metadata"].as_object_mut() {
        meta.retain(|_, value| !value.is_null());
    }
    let mut annotations = annotations_of(&template["metadata"]);
    let spec = pod_spec_from_kube(
        &template["spec"],
        &mut annotations,
        &format!("{at}.spec"),
        errors,
        warnings,
    );
    set_annotations(&mut template["metadata"], annotations);
    template["spec"] = spec;
    template
}

/// A Skiff pod spec as a Kubernetes one; what has no place there goes into
/// `annotations`.
fn pod_spec_to_kube(spec: &Value, annotations: &mut Map<String, Value>) -> Value {
    let mut rest = spec.as_object().cloned().unwrap_or_default();
    let mut take = |field: &str| rest.remove(field).filter(|v| !v.is_null());
    let kept = take_kept(annotations);
    let mut container = Map::new();
    let name = annotations
        .remove(CONTAINER_NAME_ANNOTATION)
        .and_then(|n| n.as_str().map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_CONTAINER.to_owned());
    container.insert("name".into(), json!(name));
    for field in [
        "image",
        "args",
        "env",
        "imagePullPolicy",
        "livenessProbe",
        "readinessProbe",
    ] {
        if let Some(value) = take(field) {
            container.insert(field.into(), value);
        }
    }
    let mut pod = Map::new();
    if let Some(Value::Object(mut resources)) = take("resources") {
        let mut limits = Map::new();
        for field in ["memory", "cpu"] {
            if let Some(value) = resources.remove(field) {
                limits.insert(field.into(), value);
            }
        }
        for (field, annotation) in RESOURCE_ANNOTATIONS {
            if let Some(value) = resources.remove(field) {
                annotations.insert(annotation.into(), json!(plain(&value)));
            }
        }
        if !limits.is_empty() {
            container.insert("resources".into(), json!({"limits": limits}));
        }
    }
    if let Some(runtime) = take("runtime") {
        annotations.insert(RUNTIME_ANNOTATION.into(), json!(plain(&runtime)));
    }
    if let Some(Value::Array(hosts)) = take("allowOutbound")
        && !hosts.is_empty()
    {
        let hosts: Vec<String> = hosts.iter().map(plain).collect();
        annotations.insert(OUTBOUND_ANNOTATION.into(), json!(hosts.join(",")));
    }
    let mut security = Map::new();
    if let Some(Value::Object(context)) = take("securityContext") {
        security.extend(context);
    }
    if take("readOnlyRootFilesystem") == Some(json!(true)) {
        security.insert("readOnlyRootFilesystem".into(), json!(true));
    }
    if !security.is_empty() {
        container.insert("securityContext".into(), Value::Object(security));
    }
    if let Some(Value::Array(volumes)) = take("volumes") {
        let mut mounts = Vec::new();
        let mut kube_volumes = Vec::new();
        for volume in volumes {
            let mut mount = json!({"name": volume["name"], "mountPath": volume["mountPath"]});
            if volume["readOnly"] == true {
                mount["readOnly"] = json!(true);
            }
            mounts.push(mount);
            let mut kube = json!({"name": volume["name"]});
            if let Some(host) = volume.get("hostPath") {
                kube["hostPath"] = host.clone();
            } else if let Some(empty) = volume.get("emptyDir") {
                kube["emptyDir"] = empty.clone();
            } else if let Some(map) = volume.get("configMap") {
                kube["configMap"] = json!({"name": map["name"]});
            } else if let Some(secret) = volume.get("secret") {
                kube["secret"] = json!({"secretName": secret["name"]});
            }
            kube_volumes.push(kube);
        }
        container.insert("volumeMounts".into(), json!(mounts));
        pod.insert("volumes".into(), json!(kube_volumes));
    }
    if let Some(secret) = take("imagePullSecret") {
        pod.insert("imagePullSecrets".into(), json!([{"name": secret}]));
    }
    for field in [
        "restartPolicy",
        "nodeSelector",
        "tolerations",
        "affinity",
        "nodeName",
        "serviceAccountName",
        "automountServiceAccountToken",
        "priority",
    ] {
        if let Some(value) = take(field) {
            pod.insert(field.into(), value);
        }
    }
    // Only what is kept for display, in the places it was taken from: an
    // annotation is the writer's to set, and must never make the shown
    // object claim limits, privileges or images it does not have.
    if let Some(ports) = kept["container"].get("ports").filter(|p| p.is_array()) {
        container.insert("ports".into(), ports.clone());
    }
    if let Some(requests) = kept["container"]["resources"]
        .get("requests")
        .filter(|r| r.is_object())
    {
        let resources = container.entry("resources").or_insert_with(|| json!({}));
        resources["requests"] = requests.clone();
    }
    for (key, value) in kept["pod"].as_object().into_iter().flatten() {
        if IGNORED_POD_FIELDS.contains(&key.as_str()) {
            pod.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    pod.insert("containers".into(), json!([container]));
    rest.retain(|_, v| !v.is_null());
    if !rest.is_empty() {
        annotations.insert(
            SPEC_ANNOTATION.into(),
            json!(Value::Object(rest).to_string()),
        );
    }
    Value::Object(pod)
}

/// A Kubernetes pod spec as a Skiff one, the annotations that carry
/// Skiff's own fields taken out of `annotations`.
fn pod_spec_from_kube(
    spec: &Value,
    annotations: &mut Map<String, Value>,
    at: &str,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) -> Value {
    let mut skiff =
        take_spec_annotation(annotations, &format!("{at}.metadata.annotations"), errors);
    annotations.remove(KEPT_ANNOTATION);
    let mut kept_pod = Map::new();
    let mut kept_container = Map::new();
    let mut resources = skiff
        .remove("resources")
        .and_then(|r| r.as_object().cloned())
        .unwrap_or_default();
    for (field, annotation) in RESOURCE_ANNOTATIONS {
        if let Some(value) = annotations.remove(annotation) {
            let text = plain(&value);
            let value = if matches!(field, "maxInstances" | "reservedInstances") {
                match text.parse::<u64>() {
                    Ok(n) => json!(n),
                    Err(_) => {
                        errors.push(FieldError::new(
                            &format!("metadata.annotations[{annotation}]"),
                            "must be a whole number",
                        ));
                        continue;
                    }
                }
            } else {
                json!(text)
            };
            resources.insert(field.into(), value);
        }
    }
    if let Some(runtime) = annotations.remove(RUNTIME_ANNOTATION) {
        skiff.insert("runtime".into(), runtime);
    }
    if let Some(hosts) = annotations.remove(OUTBOUND_ANNOTATION) {
        let hosts: Vec<Value> = plain(&hosts)
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| json!(h))
            .collect();
        skiff.insert("allowOutbound".into(), json!(hosts));
    }
    let Some(fields) = spec.as_object() else {
        errors.push(FieldError::new(at, "must be an object"));
        return Value::Object(skiff);
    };
    let mut container = Value::Null;
    let mut kube_volumes: Vec<Value> = Vec::new();
    for (key, value) in fields {
        let field = format!("{at}.{key}");
        match key.as_str() {
            "containers" => match value.as_array().map(Vec::as_slice) {
                Some([one]) => container = one.clone(),
                Some([]) | None => {
                    errors.push(FieldError::new(&field, "must hold exactly one container"))
                }
                Some(_) => errors.push(FieldError::new(
                    &format!("{field}[1]"),
                    "is not supported: a Skiff pod runs one component or image",
                )),
            },
            "initContainers" | "ephemeralContainers" => {
                if value.as_array().is_some_and(|a| !a.is_empty()) {
                    errors.push(FieldError::new(
                        &format!("{field}[0]"),
                        "is not supported: a Skiff pod runs one component or image, with nothing before it",
                    ));
                }
            }
            "hostNetwork" | "hostPID" | "hostIPC" | "shareProcessNamespace" => {
                if value == &json!(true) {
                    errors.push(FieldError::new(
                        &field,
                        "is not supported: pods share nothing with their node",
                    ));
                }
            }
            "volumes" => kube_volumes = value.as_array().cloned().unwrap_or_default(),
            "imagePullSecrets" => match value.as_array().map(Vec::as_slice) {
                Some([]) | None => {}
                Some([one]) => {
                    skiff.insert("imagePullSecret".into(), one["name"].clone());
                }
                Some(_) => errors.push(FieldError::new(
                    &format!("{field}[1]"),
                    "is not supported: a pod pulls with at most one Secret",
                )),
            },
            "serviceAccount" | "serviceAccountName" => {
                skiff.insert("serviceAccountName".into(), value.clone());
            }
            "restartPolicy"
            | "nodeSelector"
            | "tolerations"
            | "affinity"
            | "nodeName"
            | "automountServiceAccountToken"
            | "priority" => {
                skiff.insert(key.clone(), value.clone());
            }
            "securityContext" => {
                let mut context = value.as_object().cloned().unwrap_or_default();
                security_from_kube(&mut context, &field, errors);
                if !context.is_empty() {
                    skiff.insert("securityContext".into(), Value::Object(context));
                }
            }
            // What Kubernetes itself fills in, and what means nothing here.
            ignored if IGNORED_POD_FIELDS.contains(&ignored) => {
                if !value.is_null() {
                    warnings.push(format!("{field} is ignored: Skiff has no such setting"));
                    kept_pod.insert(key.clone(), value.clone());
                }
            }
            _ => errors.push(FieldError::new(&field, "is not supported by Skiff")),
        }
    }
    if container.is_null() {
        return Value::Object(skiff);
    }
    let at = format!("{at}.containers[0]");
    let mut mounts: Vec<Value> = Vec::new();
    for (key, value) in container.as_object().into_iter().flatten() {
        let field = format!("{at}.{key}");
        match key.as_str() {
            "name" => {
                let name = plain(value);
                if name != DEFAULT_CONTAINER {
                    annotations.insert(CONTAINER_NAME_ANNOTATION.into(), json!(name));
                }
            }
            "image" | "args" | "env" | "imagePullPolicy" => {
                skiff.insert(key.clone(), value.clone());
            }
            "livenessProbe" | "readinessProbe" => {
                let mut probe = value.as_object().cloned().unwrap_or_default();
                if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
                    // A component answers on the pod's one port.
                    get.remove("port");
                    get.remove("scheme");
                }
                for kind in ["exec", "tcpSocket", "grpc"] {
                    if probe.contains_key(kind) {
                        errors.push(FieldError::new(
                            &format!("{field}.{kind}"),
                            "is not supported: probes are HTTP GETs",
                        ));
                    }
                }
                probe.retain(|k, _| {
                    !matches!(
                        k.as_str(),
                        "exec"
                            | "tcpSocket"
                            | "grpc"
                            | "successThreshold"
                            | "terminationGracePeriodSeconds"
                    )
                });
                skiff.insert(key.clone(), Value::Object(probe));
            }
            "resources" => {
                for (part, values) in value.as_object().into_iter().flatten() {
                    match part.as_str() {
                        "limits" => {
                            for (resource, quantity) in values.as_object().into_iter().flatten() {
                                if matches!(resource.as_str(), "memory" | "cpu") {
                                    resources.insert(resource.clone(), json!(plain(quantity)));
                                } else {
                                    errors.push(FieldError::new(
                                        &format!("{field}.limits.{resource}"),
                                        "is not a resource Skiff limits: memory and cpu (Wasm limits are skiff.dev/ annotations)",
                                    ));
                                }
                            }
                        }
                        "requests" => {
                            warnings.push(format!(
                                "{field}.requests is ignored: Skiff places and limits pods by their limits"
                            ));
                            kept_container.insert("resources".into(), json!({"requests": values}));
                        }
                        other => errors.push(FieldError::new(
                            &format!("{field}.{other}"),
                            "is not supported by Skiff",
                        )),
                    }
                }
            }
            "volumeMounts" => mounts = value.as_array().cloned().unwrap_or_default(),
            "securityContext" => {
                let mut context = value.as_object().cloned().unwrap_or_default();
                if let Some(read_only) = context.remove("readOnlyRootFilesystem") {
                    skiff.insert("readOnlyRootFilesystem".into(), read_only);
                }
                security_from_kube(&mut context, &field, errors);
                if !context.is_empty() {
                    let merged = skiff.entry("securityContext").or_insert_with(|| json!({}));
                    if let Some(merged) = merged.as_object_mut() {
                        merged.extend(context);
                    }
                }
            }
            "ports" => {
                warnings.push(format!(
                    "{field} is ignored: a component serves HTTP on the pod's own port, and Services name theirs"
                ));
                kept_container.insert(key.clone(), value.clone());
            }
            "terminationMessagePath" | "terminationMessagePolicy" => {}
            _ => errors.push(FieldError::new(&field, "is not supported by Skiff")),
        }
    }
    if !resources.is_empty() {
        skiff.insert("resources".into(), Value::Object(resources));
    }
    if !kept_pod.is_empty() || !kept_container.is_empty() {
        annotations.insert(
            KEPT_ANNOTATION.into(),
            json!(json!({"pod": kept_pod, "container": kept_container}).to_string()),
        );
    }
    // Each mount with its volume: Skiff's volumes are where they mount.
    let mut volumes = Vec::new();
    for (index, mount) in mounts.iter().enumerate() {
        let name = mount["name"].as_str().unwrap_or_default();
        let Some(kube) = kube_volumes.iter().find(|v| v["name"] == name) else {
            errors.push(FieldError::new(
                &format!("{at}.volumeMounts[{index}].name"),
                format!("names no volume of the pod: `{name}`"),
            ));
            continue;
        };
        let mut volume = json!({"name": name, "mountPath": mount["mountPath"]});
        if mount["readOnly"] == true {
            volume["readOnly"] = json!(true);
        }
        if let Some(host) = kube.get("hostPath") {
            volume["hostPath"] = json!({"path": host["path"]});
        } else if let Some(empty) = kube.get("emptyDir") {
            let mut source = json!({});
            if let Some(size) = empty.get("sizeLimit") {
                source["sizeLimit"] = size.clone();
            }
            volume["emptyDir"] = source;
        } else if let Some(map) = kube.get("configMap") {
            volume["configMap"] = json!({"name": map["name"]});
        } else if let Some(secret) = kube.get("secret") {
            volume["secret"] = json!({"name": secret["secretName"]});
        } else {
            errors.push(FieldError::new(
                &format!("spec.volumes[{name}]"),
                "is not supported: volumes are hostPath, emptyDir, configMap or secret",
            ));
        }
        volumes.push(volume);
    }
    for volume in &kube_volumes {
        if !mounts.iter().any(|m| m["name"] == volume["name"]) {
            errors.push(FieldError::new(
                &format!("spec.volumes[{}]", plain(&volume["name"])),
                "is mounted nowhere: a Skiff volume is where its one container mounts it",
            ));
        }
    }
    if !volumes.is_empty() {
        skiff.insert("volumes".into(), json!(volumes));
    }
    Value::Object(skiff)
}

/// Keeps from a security context what Skiff has (the user and group to
/// run as), refusing what would grant more.
fn security_from_kube(context: &mut Map<String, Value>, at: &str, errors: &mut Vec<FieldError>) {
    for (key, value) in std::mem::take(context) {
        match key.as_str() {
            "runAsUser" | "runAsGroup" | "runAsNonRoot" => {
                context.insert(key, value);
            }
            "privileged" | "allowPrivilegeEscalation" if value == json!(true) => errors.push(FieldError::new(
                &format!("{at}.{key}"),
                "is not supported: Wasm pods have no privileges, and Linux pods run unprivileged",
            )),
            "privileged" | "allowPrivilegeEscalation" | "seccompProfile" => {}
            "capabilities" if value["add"].as_array().is_none_or(Vec::is_empty) => {}
            _ => errors.push(FieldError::new(&format!("{at}.{key}"), "is not supported by Skiff")),
        }
    }
}

fn service_spec_from_kube(
    spec: &mut Value,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) {
    let Some(fields) = spec.as_object_mut() else {
        return;
    };
    match fields.remove("type").as_ref().and_then(Value::as_str) {
        None | Some("ClusterIP") => {}
        Some(other) => errors.push(FieldError::new(
            "spec.type",
            format!("`{other}` is not supported: every node's ingress serves every Service"),
        )),
    }
    for ignored in [
        "clusterIP",
        "clusterIPs",
        "sessionAffinity",
        "ipFamilies",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
    ] {
        if fields.remove(ignored).is_some_and(|v| !v.is_null()) {
            warnings.push(format!(
                "spec.{ignored} is ignored: Skiff Services have no cluster IP"
            ));
        }
    }
    if let Some(ports) = fields.get_mut("ports").and_then(Value::as_array_mut) {
        for (index, port) in ports.iter_mut().enumerate() {
            let at = format!("spec.ports[{index}]");
            let Some(port) = port.as_object_mut() else {
                continue;
            };
            match port.remove("protocol").as_ref().and_then(Value::as_str) {
                None | Some("TCP") => {}
                Some(other) => errors.push(FieldError::new(
                    &format!("{at}.protocol"),
                    format!("`{other}` is not supported: Services carry HTTP or TCP"),
                )),
            }
            let tcp = port.remove("appProtocol").as_ref().and_then(Value::as_str)
                == Some("skiff.dev/tcp");
            port.insert("protocol".into(), json!(if tcp { "TCP" } else { "HTTP" }));
            if port.get("targetPort").is_some_and(Value::is_string) {
                errors.push(FieldError::new(
                    &format!("{at}.targetPort"),
                    "must be a number: pods have no named ports",
                ));
            }
            port.remove("nodePort");
        }
    }
}

/// An Ingress's one rule of one path as a Route.
fn route_from_ingress(
    spec: &Value,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) -> Value {
    let mut route = Map::new();
    for key in spec.as_object().into_iter().flatten().map(|(k, _)| k) {
        match key.as_str() {
            "rules" => {}
            "ingressClassName" => warnings.push(
                "spec.ingressClassName is ignored: every node's ingress serves every route".into(),
            ),
            "tls" => errors.push(FieldError::new(
                "spec.tls",
                "is not supported: TLS is terminated in front of the nodes' ingress",
            )),
            _ => errors.push(FieldError::new(
                &format!("spec.{key}"),
                "is not supported by Skiff",
            )),
        }
    }
    let rules = spec["rules"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let rule = match rules {
        [one] => one,
        [] => {
            errors.push(FieldError::new(
                "spec.rules",
                "must hold exactly one rule: a Route is one host and path",
            ));
            return Value::Object(route);
        }
        _ => {
            errors.push(FieldError::new(
                "spec.rules[1]",
                "is not supported: a Route is one host and path; write one Ingress each",
            ));
            return Value::Object(route);
        }
    };
    if let Some(host) = rule["host"].as_str() {
        route.insert("host".into(), json!(host));
    }
    let paths = rule["http"]["paths"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let [path] = paths else {
        errors.push(FieldError::new(
            "spec.rules[0].http.paths",
            "must hold exactly one path: a Route is one host and path; write one Ingress each",
        ));
        return Value::Object(route);
    };
    match path["pathType"].as_str() {
        None | Some("Prefix") => {}
        Some("ImplementationSpecific") => warnings.push(
            "spec.rules[0].http.paths[0].pathType ImplementationSpecific is served as Prefix"
                .into(),
        ),
        Some(other) => errors.push(FieldError::new(
            "spec.rules[0].http.paths[0].pathType",
            format!("`{other}` is not supported: routes match path prefixes"),
        )),
    }
    if let Some(prefix) = path["path"].as_str().filter(|p| *p != "/") {
        route.insert("path".into(), json!(prefix));
    }
    let service = &path["backend"]["service"];
    if service.is_null() {
        errors.push(FieldError::new(
            "spec.rules[0].http.paths[0].backend.service",
            "is required: a Route sends requests to a Service",
        ));
    }
    route.insert("service".into(), service["name"].clone());
    if let Some(port) = service["port"]["number"].as_u64() {
        route.insert("port".into(), json!(port));
    }
    if service["port"].get("name").is_some() {
        errors.push(FieldError::new(
            "spec.rules[0].http.paths[0].backend.service.port.name",
            "is not supported: name the port by number",
        ));
    }
    Value::Object(route)
}

/// A pod's status with what Kubernetes clients read of its container.
fn pod_status_to_kube(status: &mut Value, container: Value, image: Value) {
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let state = match status["phase"].as_str() {
        Some("Running") => json!({"running": {"startedAt": status["startTime"]}}),
        Some("Succeeded" | "Failed") => json!({"terminated": {
            "exitCode": status["exitCode"].as_i64().unwrap_or(0),
            "reason": status["reason"].as_str().unwrap_or(status["phase"].as_str().unwrap_or_default()),
        }}),
        _ => {
            json!({"waiting": {"reason": status["reason"].as_str().unwrap_or("ContainerCreating")}})
        }
    };
    status["containerStatuses"] = json!([{
        "name": container,
        "image": image,
        "imageID": status["imageDigest"],
        "ready": ready,
        "started": status["phase"] == "Running",
        "restartCount": status["restartCount"].as_u64().unwrap_or(0),
        "state": state,
    }]);
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Applies a strategic merge patch (what kubectl sends for Kubernetes'
/// own kinds) to `target`, in the parts Skiff's kinds use: maps merge as
/// in a JSON merge patch; lists of objects with a merge key (`name`, or a
/// port's `containerPort` or `port`) merge element by element; other lists
/// are replaced; the directives `$patch` (`replace`, `delete`),
/// `$retainKeys` and `$deleteFromPrimitiveList/` are honoured, and
/// `$setElementOrder/` (only an order) is skipped.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = json!({});
    }
    let fields = target.as_object_mut().expect("made an object");
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: std::collections::HashSet<&str> = keep.iter().filter_map(Value::as_str).collect();
        fields.retain(|key, _| keep.contains(key.as_str()) || patch.contains_key(key));
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(gone)) =
                (fields.get_mut(list), value.as_array())
            {
                let gone: std::collections::HashSet<String> =
                    gone.iter().map(Value::to_string).collect();
                items.retain(|item| !gone.contains(&item.to_string()));
            }
            continue;
        }
        match value {
            Value::Null => {
                fields.remove(key);
            }
            Value::Object(_) => {
                let slot = fields.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, value);
                if slot.is_null() {
                    fields.remove(key);
                }
            }
            Value::Array(items) => {
                let merge_key = merge_key(items);
                match (merge_key, fields.get_mut(key)) {
                    (Some(merge_key), Some(Value::Array(current))) => {
                        merge_list(current, items, merge_key);
                    }
                    _ => {
                        let items: Vec<Value> = items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .cloned()
                            .collect();
                        fields.insert(key.clone(), Value::Array(items));
                    }
                }
            }
            other => {
                fields.insert(key.clone(), other.clone());
            }
        }
    }
}

/// The key elements of a patched list are matched by, if they are objects
/// that have one.
fn merge_key(items: &[Value]) -> Option<&'static str> {
    ["name", "containerPort", "port"]
        .into_iter()
        .find(|key| !items.is_empty() && items.iter().all(|i| i.get(*key).is_some()))
}

/// Merges `patch` into `current` element by element, matched on `key`; in
/// time linear in both (a patch and an object may each hold many thousand
/// elements).
fn merge_list(current: &mut Vec<Value>, patch: &[Value], key: &str) {
    let mut slots: Vec<Option<Value>> = std::mem::take(current).into_iter().map(Some).collect();
    let mut at: std::collections::HashMap<String, usize> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, item)| Some((item.as_ref()?.get(key)?.to_string(), i)))
        .collect();
    for item in patch {
        let Some(id) = item.get(key).map(Value::to_string) else {
            continue;
        };
        let found = at.get(&id).copied();
        match (item.get("$patch").and_then(Value::as_str), found) {
            (Some("delete"), Some(i)) => {
                slots[i] = None;
                at.remove(&id);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => {
                if let Some(slot) = slots[i].as_mut() {
                    strategic_merge(slot, item);
                }
            }
            (_, None) => {
                let mut added = Value::Null;
                strategic_merge(&mut added, item);
                at.insert(id, slots.len());
                slots.push(Some(added));
            }
        }
    }
    *current = slots.into_iter().flatten().collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skiff_pod() -> Value {
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                         "annotations": {"skiff.dev/container-name": "server", "note": "hi"}},
            "spec": {
                "image": "reg/web:v1", "args": ["--fast"], "env": [{"name": "A", "value": "1"}],
                "resources": {"memory": "64Mi", "fuel": "10M", "timeout": "30s", "maxInstances": 8},
                "allowOutbound": ["api.example.com", "db:5432"], "runtime": "Wasm",
                "volumes": [{"name": "conf", "mountPath": "/etc/conf", "readOnly": true, "configMap": {"name": "settings"}}],
                "ports": [{"port": 8080, "protocol": "HTTP"}],
                "serviceAccountName": "default", "restartPolicy": "Always", "priority": 5,
            },
            "status": {"phase": "Running", "restartCount": 2,
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })
    }

    #[test]
    fn a_pod_goes_to_kubernetes_and_back_unchanged() {
        let stored = skiff_pod();
        let kube = to_kube(Kind::Pod, stored.clone());
        assert_eq!(kube["apiVersion"], "v1");
        let container = &kube["spec"]["containers"][0];
        assert_eq!(container["name"], "server");
        assert_eq!(container["image"], "reg/web:v1");
        assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/conf");
        assert_eq!(kube["spec"]["volumes"][0]["configMap"]["name"], "settings");
        let annotations = &kube["metadata"]["annotations"];
        assert_eq!(annotations["skiff.dev/fuel"], "10M");
        assert_eq!(annotations["skiff.dev/max-instances"], "8");
        assert_eq!(
            annotations["skiff.dev/allow-outbound"],
            "api.example.com,db:5432"
        );
        assert_eq!(annotations["note"], "hi");
        assert_eq!(kube["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(kube["status"]["containerStatuses"][0]["restartCount"], 2);
        assert_eq!(kube["metadata"]["resourceVersion"], "7");

        let (back, warnings) = from_kube(Kind::Pod, kube).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut want = stored;
        want.as_object_mut().unwrap().remove("status");
        assert_eq!(back, want);
    }

    #[test]
    fn a_deployment_goes_to_kubernetes_and_back_and_shows_its_revisions() {
        let stored = json!({
            "apiVersion": "skiff.dev/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "d1", "resourceVersion": "9", "generation": 3},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "autoscaling": {"minReplicas": 0, "maxReplicas": 5},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"image": "reg/web:v2"}}},
            "status": {"replicas": 2, "availableReplicas": 1, "revision": 2, "history": [
                {"revision": 1, "templateHash": "aaa", "created": "t1",
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"image": "reg/web:v1"}}},
                {"revision": 2, "templateHash": "bbb", "created": "t2", "changeCause": "v2",
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"image": "reg/web:v2"}}},
            ]},
        });
        let kube = to_kube(Kind::Deployment, stored.clone());
        assert_eq!(kube["apiVersion"], "apps/v1");
        assert_eq!(kube["metadata"]["annotations"][REVISION_ANNOTATION], "2");
        assert_eq!(
            kube["spec"]["template"]["spec"]["containers"][0]["image"],
            "reg/web:v2"
        );
        assert_eq!(kube["status"]["unavailableReplicas"], 1);
        assert!(kube["status"].get("history").is_none());
        let (back, _) = from_kube(Kind::Deployment, kube).unwrap();
        let mut want = stored.clone();
        want.as_object_mut().unwrap().remove("status");
        assert_eq!(back, want);

        let sets = replica_sets(&stored);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0]["metadata"]["name"], "web-aaa");
        assert_eq!(sets[0]["spec"]["replicas"], 0);
        assert_eq!(sets[1]["spec"]["replicas"], 2);
        assert_eq!(
            sets[1]["metadata"]["annotations"][CHANGE_CAUSE_ANNOTATION],
            "v2"
        );
        assert_eq!(sets[1]["metadata"]["ownerReferences"][0]["uid"], "d1");
        assert_eq!(
            sets[0]["spec"]["template"]["spec"]["containers"][0]["image"],
            "reg/web:v1"
        );
    }

    #[test]
    fn what_skiff_does_not_have_is_refused_by_field() {
        let pod = |spec: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec});
        let refused = |spec: Value| -> Vec<String> {
            from_kube(Kind::Pod, pod(spec))
                .unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(
            refused(
                json!({"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "j"}]})
            ),
            ["spec.containers[1]"]
        );
        assert_eq!(
            refused(
                json!({"containers": [{"name": "a", "image": "i"}], "initContainers": [{"name": "b", "image": "j"}]})
            ),
            ["spec.initContainers[0]"]
        );
        assert_eq!(
            refused(
                json!({"containers": [{"name": "a", "image": "i", "securityContext": {"privileged": true}}]})
            ),
            ["spec.containers[0].securityContext.privileged"]
        );
        assert_eq!(
            refused(
                json!({"containers": [{"name": "a", "image": "i", "command": ["sh"]}], "hostNetwork": true})
            ),
            ["spec.hostNetwork", "spec.containers[0].command"]
        );
        assert_eq!(refused(json!({"containers": []})), ["spec.containers"]);
        // A manifest as people write it: accepted, with warnings for what
        // means nothing here.
        let (skiff, warnings) = from_kube(
            Kind::Pod,
            pod(json!({"containers": [{
            "name": "web", "image": "reg/web:v1", "ports": [{"containerPort": 80}],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}}}]})),
        )
        .unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(skiff["spec"]["resources"]["memory"], "128Mi");
        // They read back as written.
        let shown = to_kube(Kind::Pod, skiff.clone());
        let container = &shown["spec"]["containers"][0];
        assert_eq!(container["ports"], json!([{"containerPort": 80}]));
        assert_eq!(
            container["resources"],
            json!({"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}})
        );
        assert!(
            shown["metadata"]["annotations"]
                .get(KEPT_ANNOTATION)
                .is_none()
        );
        assert_eq!(
            skiff["metadata"]["annotations"][CONTAINER_NAME_ANNOTATION],
            "web"
        );
        for shapeless in [
            json!([]),
            json!("x"),
            json!({"metadata": 1}),
            json!({"spec": "x"}),
            json!({"spec": {"template": []}}),
        ] {
            assert!(
                from_kube(Kind::Deployment, shapeless.clone()).is_err(),
                "{shapeless}"
            );
            assert!(from_kube(Kind::Pod, shapeless).is_err());
        }
        let wrong = json!({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "i"}]}});
        assert!(from_kube(Kind::Pod, wrong).is_err());
    }

    #[test]
    fn strategic_merge_patches_merge_containers_by_name_and_honour_directives() {
        let mut pod = json!({"spec": {"containers": [{"name": "web", "image": "a", "env": [{"name": "A", "value": "1"}]}],
                                      "tolerations": [{"key": "x"}]},
                             "metadata": {"labels": {"app": "web", "tier": "front"}, "finalizers": ["f1", "f2"]}});
        strategic_merge(
            &mut pod,
            &json!({
                "$setElementOrder/containers": [{"name": "web"}],
                "spec": {"containers": [{"name": "web", "image": "b", "env": [{"name": "B", "value": "2"}]}],
                         "tolerations": [{"key": "y"}]},
                "metadata": {"labels": {"tier": null, "team": "edge"}, "$deleteFromPrimitiveList/finalizers": ["f1"]},
            }),
        );
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(pod["spec"]["containers"][0]["image"], "b");
        assert_eq!(
            pod["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "y"}]));
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"app": "web", "team": "edge"})
        );
        assert_eq!(pod["metadata"]["finalizers"], json!(["f2"]));
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "web", "$patch": "delete"}]}}),
        );
        assert_eq!(pod["spec"]["containers"], json!([]));
        strategic_merge(
            &mut pod,
            &json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
        );
        assert_eq!(pod["metadata"]["labels"], json!({"only": "this"}));
    }

    #[test]
    fn a_route_is_an_ingress_of_one_rule() {
        let stored = json!({"apiVersion": "skiff.dev/v1", "kind": "Route", "metadata": {"name": "r"},
            "spec": {"host": "shop.example", "path": "/api", "service": "web", "port": 80}});
        let kube = to_kube(Kind::Route, stored.clone());
        assert_eq!(kube["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(
            kube["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
            80
        );
        let (back, _) = from_kube(Kind::Route, kube).unwrap();
        assert_eq!(back, stored);
        let two = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "r"},
            "spec": {"tls": [{}], "rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "a"}}},
                                                                {"path": "/b", "backend": {"service": {"name": "b"}}}]}}]}});
        let fields: Vec<String> = from_kube(Kind::Route, two)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.tls", "spec.rules[0].http.paths"]);
    }

    #[test]
    fn a_service_keeps_its_protocols() {
        let stored = json!({"apiVersion": "skiff.dev/v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "HTTP"},
                                                         {"name": "db", "port": 5432, "protocol": "TCP"}]}});
        let kube = to_kube(Kind::Service, stored.clone());
        assert_eq!(kube["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(kube["spec"]["ports"][0]["appProtocol"], "http");
        let (back, _) = from_kube(Kind::Service, kube).unwrap();
        assert_eq!(back, stored);
        let node_port = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "NodePort"}});
        assert!(from_kube(Kind::Service, node_port).is_err());
    }
}
