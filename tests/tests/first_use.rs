//! Regressions of what a newcomer met starting a node and running the SDK's examples
//! (issue 8): colour codes in a log that is not a terminal, and examples that failed on a
//! fresh node with a Debug dump. Each test says the bug it guards against.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use runnel_tests::server::{free_ports, server_binary, TestServer};

/// Regression (issue 8, item 12): the server's log carried ANSI colour codes into files and
/// pipes. With stdout a pipe (and `NO_COLOR` unset, which the other tests set) the log is
/// plain text.
#[test]
fn the_log_has_no_colour_codes_when_it_is_not_a_terminal() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(server_binary())
        .arg("--data-dir")
        .arg(temp.path().join("data"))
        .args(["--base-port", &free_ports(1).to_string()])
        .args(["--cores", "1", "--pin-cores", "false"])
        .env("RUNNEL_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runnel-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = Vec::new();
    // The log ends when the process does; "listening" is the last line of a start.
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let listening = line.contains("listening");
        lines.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|line| line.contains("listening")),
        "the server did not start:\n{}",
        lines.join("\n")
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "a colour code in {line:?}");
    }
}

/// The example binaries of `runnel-client`, built by `cargo test --workspace` (or
/// `cargo build -p runnel-client --examples`) beside the server binary.
fn example(name: &str) -> PathBuf {
    let path = server_binary()
        .parent()
        .expect("target/<profile>")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p runnel-client --examples` (or `cargo test \
         --workspace`) first",
        path.display()
    );
    path
}

/// Runs an example against `server`; its exit status, stdout and stderr.
fn run_example(server: &TestServer, name: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(example(name))
        .args(args)
        .env("RUNNEL_URL", server.url())
        .env("RUNNEL_CA_CERT", server.certificate())
        .env_remove("RUNNEL_INSECURE")
        .stdin(Stdio::null())
        .output()
        .expect("run the example");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Regression (issue 8, item 8): `--example produce` on a fresh node failed with
/// `Error: Server { request: "Append", code: UnknownStream, .. }` because only `admin`
/// created the stream. Each example now creates what it needs, so `produce`, then `consume`
/// and `read`, work on a fresh node in any order; and an error is one sentence.
#[test]
fn the_examples_run_on_a_fresh_node() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);

    let (ok, stdout, stderr) = run_example(&server, "produce", &[]);
    assert!(ok, "produce failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1000 of 1000 records stored"), "{stdout}");

    let (ok, stdout, stderr) = run_example(&server, "consume", &["worker-1", "10"]);
    assert!(ok, "consume failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("created subscription example-billing"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run_example(&server, "admin", &[]);
    assert!(ok, "admin failed:\n{stdout}\n{stderr}");

    // An error is a sentence, not a Debug dump.
    let temp = tempfile::tempdir().expect("temp dir");
    let output = Command::new(example("admin"))
        .env("RUNNEL_URL", server.url())
        .env("RUNNEL_CA_CERT", temp.path().join("missing.pem"))
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains('{'), "a Debug dump: {stderr}");
}
