//! The bounded helpers fail, naming what they waited for, instead of hanging.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use iotgw_test_support::{run, run_within, wait};

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(f).expect_err("it panics");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn a_program_past_its_limit_is_killed_and_named() {
    let started = Instant::now();
    let message = panic_message(|| {
        run_within(Command::new("sleep").arg("30"), Duration::from_millis(300));
    });
    assert!(message.contains("sleep") && message.contains("still running"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn a_program_within_its_limit_gives_its_output_and_status() {
    let output = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]));
    assert_eq!((output.status.code(), &output.stdout[..], &output.stderr[..]), (Some(3), &b"out\n"[..], &b"err\n"[..]));
}

#[test]
fn a_condition_that_never_holds_fails_naming_it() {
    let started = Instant::now();
    let message = panic_message(|| {
        wait::until("the moon", Duration::from_millis(200), || None::<()>);
    });
    assert!(message.contains("the moon"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(wait::until("at once", Duration::ZERO, || Some(7)), 7);
}

#[tokio::test]
async fn a_future_that_never_resolves_fails_naming_it() {
    let waited = tokio::spawn(wait::within("a reply", Duration::from_millis(200), std::future::pending::<()>()));
    let message = waited.await.expect_err("it panics").into_panic();
    let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("a reply"), "{message}");
    let probed = tokio::spawn(wait::until_async("a probe", Duration::from_millis(200), async || None::<()>));
    assert!(probed.await.is_err(), "panics past its limit");
}
