//! `list`: runc's table, ids only, or JSON.

use crate::args::ListFormat;
use anyhow::Result;
use hyperjail_runtime::Runtime;
use std::io::Write;

/// Prints every container.
pub fn print(rt: &Runtime, format: ListFormat, quiet: bool) -> Result<()> {
    let all = rt.list()?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for (rec, _) in &all {
            writeln!(out, "{}", rec.id)?;
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => {
            let states: Vec<_> = all.iter().map(|(r, s)| Runtime::oci_state(r, *s)).collect();
            writeln!(out, "{}", serde_json::to_string(&states)?)?;
        }
        ListFormat::Table => {
            let w = all
                .iter()
                .map(|(r, _)| r.id.len())
                .max()
                .unwrap_or(2)
                .max(2)
                + 3;
            writeln!(
                out,
                "{:w$}{:<8}{:<8}{:<10}{:<40}{:<32}OWNER",
                "ID", "DOMID", "PID", "STATUS", "BUNDLE", "CREATED"
            )?;
            for (r, s) in &all {
                let st = Runtime::oci_state(r, *s);
                writeln!(
                    out,
                    "{:w$}{:<8}{:<8}{:<10}{:<40}{:<32}{}",
                    r.id,
                    r.domid,
                    st.pid,
                    s.as_str(),
                    r.bundle.display(),
                    r.created,
                    if st.owner.is_empty() {
                        "root"
                    } else {
                        &st.owner
                    }
                )?;
            }
        }
    }
    Ok(())
}
