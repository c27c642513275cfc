//! A command component: prints its arguments and environment, then exits
//! with the code given by `EXIT_CODE` (0 by default). Try
//! `wasmctl run examples/echo-env --env GREETING=hi -- one two`.

fn main() {
    for (i, arg) in std::env::args().enumerate() {
        println!("arg[{i}]={arg}");
    }
    let mut vars: Vec<_> = std::env::vars().collect();
    vars.sort();
    for (key, value) in &vars {
        println!("env {key}={value}");
    }
    let code: u8 = match std::env::var("EXIT_CODE") {
        Ok(code) => code.parse().unwrap_or_else(|_| {
            eprintln!("EXIT_CODE must be a number from 0 to 255, got {code:?}");
            2
        }),
        Err(_) => 0,
    };
    if code != 0 {
        // WASI 0.2's `exit` only says success or failure, and Rust's
        // `process::exit` maps every failure to 1; `exit-with-code` carries
        // the actual status.
        wasip2::cli::exit::exit_with_code(code);
    }
}
