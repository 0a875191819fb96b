//! Writes an imported class as policy TOML: a header saying where it comes from, the refused
//! ACEs and notes as comments, then the `[[class]]` and its rules. Pure text.
use std::fmt::Write as _;

use gateway_ebpf::PortRange;

use super::{ImportedRule, Refusal, RuleTarget};
use crate::policy::remote::Remote;

/// What the class is called and where it comes from.
pub struct Header<'a> {
    pub class: &'a str,
    pub id: u16,
    pub mud_url: &'a str,
    pub systeminfo: &'a str,
}

/// TOML strings, quoted and escaped by the toml crate.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// One line of a comment: what a MUD file says may hold newlines.
fn comment(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", "))
}

fn port_list(ports: &[PortRange]) -> String {
    list(ports, |range| {
        if range.first == range.last {
            range.first.to_string()
        } else {
            quoted(&format!("{}-{}", range.first, range.last))
        }
    })
}

pub fn class(header: &Header, rules: &[ImportedRule], refused: &[Refusal], notes: &[String]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "# Imported from the MUD file of {}", comment(header.mud_url));
    if !header.systeminfo.is_empty() {
        let _ = writeln!(out, "# System: {}", comment(header.systeminfo));
    }
    for refusal in refused {
        let _ = writeln!(out, "# Refused {}", comment(&refusal.to_string()));
    }
    for note in notes {
        let _ = writeln!(out, "# Note: {}", comment(note));
    }
    let _ = writeln!(out, "\n[[class]]\nname = {}\nid = {}", quoted(header.class), header.id);
    let description =
        if header.systeminfo.is_empty() { format!("MUD {}", header.mud_url) } else { header.systeminfo.to_owned() };
    let _ = writeln!(out, "description = {}", quoted(&description));
    let controlled =
        |rule: &ImportedRule| matches!(&rule.target, RuleTarget::Remote(Remote::Controller | Remote::MyController, _));
    if rules.iter().any(controlled) {
        let _ = writeln!(out, "# The addresses `controller` and `my-controller` rules reach.\ncontrollers = []");
    }
    let _ = writeln!(out, "\n[class.match]");
    let _ = writeln!(out, "# Add how devices join this class: macs, ouis, fingerprint_types, cert_subjects.");
    for rule in rules {
        let description = format!("MUD ACE {}", rule.aces.join(", "));
        let _ = writeln!(out, "\n[[class.allow]]\ndescription = {}", quoted(&description));
        match &rule.target {
            RuleTarget::Nets(nets) => {
                let _ = writeln!(out, "nets = {}", list(nets, |net| quoted(&net.to_string())));
            }
            RuleTarget::Name(name, families) => {
                let _ = writeln!(out, "names = [{}]", quoted(&name.to_string()));
                if let (1, Some(family)) = (families.len(), families.first()) {
                    let _ = writeln!(out, "family = {}", quoted(family.as_str()));
                }
            }
            RuleTarget::Remote(remote, within) => {
                let _ = writeln!(out, "remote = {}", quoted(&remote.to_string()));
                if !within.is_empty() {
                    let _ = writeln!(out, "nets = {}", list(within, |net| quoted(&net.to_string())));
                }
            }
        }
        let _ = writeln!(out, "protocol = {}", quoted(rule.protocol.as_str()));
        if !rule.ports.is_empty() {
            let _ = writeln!(out, "ports = {}", port_list(&rule.ports));
        }
        if !rule.source_ports.is_empty() {
            let _ = writeln!(out, "source_ports = {}", port_list(&rule.source_ports));
        }
        if let Some(icmp) = rule.icmp {
            let _ = writeln!(out, "icmp_types = [{}]", quoted(&icmp.to_string()));
        }
        let _ = writeln!(out, "direction = {}", quoted(rule.direction.as_str()));
    }
    out
}
