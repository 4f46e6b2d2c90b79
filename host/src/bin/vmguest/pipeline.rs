//! Objects in on stdin: plain VM names one per line, or JSON values (objects with a
//! `name`, `VMName` or `vm` property, strings, or arrays of those), as `Get-VM
//! -OutputFormat Json` and `Install-IntegrationComponents -OutputFormat Json` write them.
//! An object's `host` (or `ComputerName`) property pins the VM to that host.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::args::USAGE_ERROR;

/// A VM named on the command line or in the pipeline, maybe pinned to one host.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub host: Option<String>,
}

impl Target {
    pub fn named(name: impl Into<String>) -> Target {
        Target {
            name: name.into(),
            host: None,
        }
    }
}

/// Names from the arguments, else from stdin; on a usage error, the exit code.
pub fn vm_names(
    cmdlet: &str,
    named: Vec<String>,
    positional: Vec<String>,
) -> Result<Vec<Target>, i32> {
    let mut names = named;
    names.extend(positional);
    if !names.is_empty() {
        return Ok(names.into_iter().map(Target::named).collect());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("{cmdlet} : missing -VMName (give it, or pipe names or Get-VM -OutputFormat Json into it)");
        return Err(USAGE_ERROR);
    }
    match read_names(stdin.lock()) {
        Ok(names) if !names.is_empty() => Ok(names),
        Ok(_) => {
            eprintln!("{cmdlet} : no VM names on stdin");
            Err(USAGE_ERROR)
        }
        Err(e) => {
            eprintln!("{cmdlet} : cannot read pipeline input: {e:#}");
            Err(USAGE_ERROR)
        }
    }
}

pub fn read_names(mut input: impl Read) -> anyhow::Result<Vec<Target>> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .context("stdin is not UTF-8 text")?;
    parse_names(&text)
}

pub fn parse_names(text: &str) -> anyhow::Result<Vec<Target>> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.starts_with('"')) {
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Target::named)
            .collect());
    }
    let mut names = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        collect(&value.context("invalid JSON on stdin")?, &mut names)?;
    }
    Ok(names)
}

fn collect(v: &Value, names: &mut Vec<Target>) -> anyhow::Result<()> {
    match v {
        Value::String(s) => names.push(Target::named(s.clone())),
        Value::Array(items) => {
            for item in items {
                collect(item, names)?;
            }
        }
        Value::Object(map) => {
            let name = ["name", "VMName", "vmName", "vm_name", "vm"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str));
            let host = ["host", "ComputerName", "computer_name"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str))
                .map(str::to_owned);
            match name {
                Some(n) => names.push(Target {
                    name: n.to_owned(),
                    host,
                }),
                None => bail!("JSON object without a name/VMName property: {v}"),
            }
        }
        other => bail!("expected a VM name or object, got {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        parse_names(text)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect()
    }

    #[test]
    fn names_json_lines_and_arrays() {
        assert_eq!(names("a\n\n# c\n b \n"), vec!["a", "b"]);
        assert_eq!(
            names("{\"name\":\"a\",\"state\":\"running\"}\n{\"VMName\":\"b\"}\n"),
            vec!["a", "b"]
        );
        assert_eq!(names("[{\"vm\":\"a\"},\"b\"]"), vec!["a", "b"]);
        let pinned = parse_names("{\"name\":\"a\",\"host\":\"qemu+ssh://h/system\"}").unwrap();
        assert_eq!(pinned[0].host.as_deref(), Some("qemu+ssh://h/system"));
        assert!(parse_names("{\"state\":1}").is_err());
    }
}
