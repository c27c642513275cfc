//! A command component that does what its arguments say, so tests can
//! check how commands meet the sandbox and the limits.
//!
//! `probe cat PATH` | `probe ls DIR` | `probe write PATH TEXT` | `probe loop`
//! | `probe alloc` | `probe burn N` | `probe trap`

use std::hint::black_box;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "cat" => match std::fs::read_to_string(arg(1)) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", arg(1));
                ExitCode::FAILURE
            }
        },
        "ls" => match std::fs::read_dir(arg(1)) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    println!("{}", entry.file_name().to_string_lossy());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot list {}: {e}", arg(1));
                ExitCode::FAILURE
            }
        },
        "write" => match std::fs::write(arg(1), arg(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write {}: {e}", arg(1));
                ExitCode::FAILURE
            }
        },
        "loop" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut blocks = Vec::new();
            loop {
                blocks.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "burn" => {
            let n: u64 = arg(1).parse().unwrap_or(1_000);
            let mut acc = 0u64;
            for i in 0..n {
                acc = black_box(acc.wrapping_mul(31).wrapping_add(i));
            }
            println!("burned {n}: {acc}");
            ExitCode::SUCCESS
        }
        "trap" => panic!("asked to trap"),
        other => {
            eprintln!("unknown probe {other:?}");
            ExitCode::from(64)
        }
    }
}
