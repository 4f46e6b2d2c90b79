//! Objects in on stdin: plain VM names one per line, or JSON values (objects with a
//! `name`, `VMName` or `vm` property, strings, or arrays of those), as `Get-VM
//! -OutputFormat Json` and `Install-IntegrationComponents -OutputFormat Json` write them.

use std::io::Read;

use anyhow::{bail, Context};
use serde_json::Value;

pub fn read_names(mut input: impl Read) -> anyhow::Result<Vec<String>> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .context("stdin is not UTF-8 text")?;
    parse_names(&text)
}

pub fn parse_names(text: &str) -> anyhow::Result<Vec<String>> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.starts_with('"')) {
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect());
    }
    let mut names = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        collect(&value.context("invalid JSON on stdin")?, &mut names)?;
    }
    Ok(names)
}

fn collect(v: &Value, names: &mut Vec<String>) -> anyhow::Result<()> {
    match v {
        Value::String(s) => names.push(s.clone()),
        Value::Array(items) => {
            for item in items {
                collect(item, names)?;
            }
        }
        Value::Object(map) => {
            let name = ["name", "VMName", "vmName", "vm_name", "vm"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str));
            match name {
                Some(n) => names.push(n.to_owned()),
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

    #[test]
    fn names_json_lines_and_arrays() {
        assert_eq!(parse_names("a\n\n# c\n b \n").unwrap(), vec!["a", "b"]);
        assert_eq!(
            parse_names("{\"name\":\"a\",\"state\":\"running\"}\n{\"VMName\":\"b\"}\n").unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            parse_names("[{\"vm\":\"a\"},\"b\"]").unwrap(),
            vec!["a", "b"]
        );
        assert!(parse_names("{\"state\":1}").is_err());
    }
}
