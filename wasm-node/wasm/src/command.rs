//! Running `wasi:cli/command` components to completion.

use wasmtime::component::InstancePre;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::error::{GuestFailure, log_detail};
use super::host::{Host, InstanceRole, InstanceSpec};

/// A command component ready to run.
pub struct CommandApp {
    spec: InstanceSpec,
    pre: CommandPre<Host>,
}

impl CommandApp {
    pub(crate) fn new(spec: InstanceSpec, pre: InstancePre<Host>) -> wasmtime::Result<Self> {
        Ok(Self {
            spec,
            pre: CommandPre::new(pre)?,
        })
    }

    /// What this app's instances use: CPU time, memory now.
    pub fn usage(&self) -> std::sync::Arc<crate::usage::Usage> {
        self.spec.usage.clone()
    }

    /// Runs the command once in a fresh instance and returns its exit code:
    /// 0 on success, 1 when `run` returns an error, or the code the guest
    /// passed to `exit`. A trap or an exceeded limit is a [`GuestFailure`].
    pub async fn run(&self) -> Result<i32, GuestFailure> {
        let spec = &self.spec;
        let _slot = spec.admit_shared().await?;
        let mut store = spec
            .new_store(self.pre.engine(), InstanceRole::Command)
            .map_err(|e| spec.failure(&e))?;
        let run = async {
            let command = self.pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        };
        let run = spec.usage.timed(run);
        // The epoch deadline stops guest code; this stops a guest blocked in
        // the host (reading stdin, sleeping) past its deadline too.
        match tokio::time::timeout(spec.limits.timeout, run).await {
            Ok(Ok(Ok(()))) => Ok(0),
            Ok(Ok(Err(()))) => Ok(1),
            Ok(Err(error)) => match error.downcast_ref::<I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => {
                    let failure = spec.failure(&error);
                    tracing::warn!(
                        "{}: command failed: {failure}\n{}",
                        spec.name,
                        log_detail(&error)
                    );
                    Err(failure)
                }
            },
            Err(_) => Err(GuestFailure::Timeout(spec.limits.timeout)),
        }
    }
}
