//! A tiny TCP tool for the datapath tests and the lab (runs inside network namespaces):
//!
//! - `lab-tcp serve ADDR:PORT NAME`  answers each connection with `NAME\n`, then echoes lines;
//! - `lab-tcp probe ADDR:PORT COUNT` opens COUNT connections one after another and prints the name
//!   each got (or `error: ...`);
//! - `lab-tcp hold ADDR:PORT SECS`   keeps one connection for SECS seconds, exchanging a line every
//!   50 ms; prints the name, then `held N` (exit 0) or `broken after N: ERROR` (exit 1).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn serve(addr: SocketAddr, name: String) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    for conn in l.incoming() {
        let Ok(mut s) = conn else { continue };
        let name = name.clone();
        std::thread::spawn(move || {
            if writeln!(s, "{name}").is_err() {
                return;
            }
            let Ok(r) = s.try_clone() else { return };
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { return };
                if writeln!(s, "{line}").is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

fn connect(addr: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>, String)> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut name = String::new();
    r.read_line(&mut name)?;
    if name.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the greeting"));
    }
    Ok((s, r, name.trim().to_string()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: lab-tcp serve ADDR:PORT NAME | probe ADDR:PORT COUNT | hold ADDR:PORT SECS");
        ExitCode::from(2)
    };
    if args.len() != 4 {
        return usage();
    }
    let Ok(addr) = args[2].parse::<SocketAddr>() else { return usage() };
    match args[1].as_str() {
        "serve" => match serve(addr, args[3].clone()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lab-tcp serve {addr}: {e}");
                ExitCode::FAILURE
            }
        },
        "probe" => {
            let Ok(n) = args[3].parse::<u32>() else { return usage() };
            for _ in 0..n {
                match connect(addr) {
                    Ok((_, _, name)) => println!("{name}"),
                    Err(e) => println!("error: {e}"),
                }
            }
            ExitCode::SUCCESS
        }
        "hold" => {
            let Ok(secs) = args[3].parse::<f64>() else { return usage() };
            let (mut s, mut r, name) = match connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    println!("broken after 0: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!("{name}");
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut n = 0u64;
            while Instant::now() < end {
                let mut line = String::new();
                let res = writeln!(s, "ping {n}").and_then(|_| r.read_line(&mut line));
                match res {
                    Ok(k) if k > 0 && line.trim() == format!("ping {n}") => n += 1,
                    Ok(_) => {
                        println!("broken after {n}: bad echo {line:?}");
                        return ExitCode::FAILURE;
                    }
                    Err(e) => {
                        println!("broken after {n}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("held {n}");
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
