//! The private servers start, answer, and leave nothing behind.
use std::{net::TcpStream, process::Command};

use iotgw_test_support::{
    checked,
    services::{NatsServer, Postgres},
};

#[test]
fn a_private_nats_server_restarts_on_its_port_after_a_kill() {
    let mut nats = NatsServer::start();
    let addr = ("127.0.0.1", nats.port);
    assert!(TcpStream::connect(addr).is_ok(), "listening at {}", nats.url());
    nats.kill9();
    assert!(TcpStream::connect(addr).is_err(), "killed");
    nats.restart();
    assert!(TcpStream::connect(addr).is_ok(), "listening again");
    let store = nats.store.clone();
    drop(nats);
    assert!(!store.exists(), "its store is removed");
}

#[test]
fn a_private_postgres_answers_queries_and_is_removed_on_drop() {
    let postgres = Postgres::start();
    let psql = checked(Command::new("psql").args([&postgres.url(), "-tAc", "SELECT 40 + 2"]));
    assert_eq!(iotgw_test_support::stdout(&psql), "42");
    let dir = postgres.dir.clone();
    drop(postgres);
    assert!(!dir.exists(), "its folder is removed");
}
