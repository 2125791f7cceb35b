//! `chatctl export cloudformation`: the stage's model as a CloudFormation template, for accounts
//! that deploy only through CloudFormation. No AWS call and no build: the settings come from
//! chatctl.toml and `--set`, the code location from the template's parameters.

use std::fmt;
use std::path::{Path, PathBuf};

use chatctl_infra::cloudformation::{self, Format, Omitted};
use chatctl_infra::config::StageTable;
use serde::Serialize;

use crate::args::{ExportArgs, OutputFormat, TemplateFormat};
use crate::commands::stage;
use crate::error::{CliError, UsageError};
use crate::output;

/// What `export --out FILE` did (with no `--out` the template itself is the output).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exported {
    pub stage: String,
    pub path: PathBuf,
    pub format: Format,
    pub resources: usize,
    pub parameters: Vec<String>,
    pub omitted: Vec<Omitted>,
}

impl fmt::Display for Exported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} as a CloudFormation template ({}, {} resources) to {}",
            self.stage,
            self.format,
            self.resources,
            self.path.display()
        )?;
        write!(f, "parameters: {}", self.parameters.join(", "))?;
        for o in &self.omitted {
            write!(f, "\n{o}")?;
        }
        Ok(())
    }
}

/// `--format`, else the extension of `--out`, else YAML (what CloudFormation users mostly write).
fn format_of(flag: Option<TemplateFormat>, out: Option<&Path>) -> Format {
    match flag {
        Some(TemplateFormat::Json) => Format::Json,
        Some(TemplateFormat::Yaml) => Format::Yaml,
        None => match out.and_then(Path::extension).and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Yaml,
        },
    }
}

pub fn cloudformation(args: ExportArgs, format: OutputFormat) -> Result<u8, CliError> {
    let config = stage::resolve_layers(
        &args.project,
        &args.stage,
        &args.set,
        &StageTable::default(),
    )?;
    let template = cloudformation::template(&config.name, &config.settings)
        .map_err(|e| CliError::Internal(e.to_string()))?;
    let template_format = format_of(args.format, args.out.as_deref());
    let text = template.render(template_format);
    let Some(path) = args.out else {
        output::raw(&text);
        for o in &template.omitted {
            eprintln!("note: {o}");
        }
        return Ok(0);
    };
    write_atomically(&path, &text)?;
    output::emit(
        format,
        &Exported {
            stage: config.name.to_string(),
            path,
            format: template_format,
            resources: template.resource_count(),
            parameters: template.parameters(),
            omitted: template.omitted,
        },
    );
    Ok(0)
}

/// Write through a temporary file in the same directory, so a reader (or a failed write) never
/// sees half a template.
fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    let fail = |source: std::io::Error| {
        CliError::from(UsageError::Out {
            path: path.to_owned(),
            source,
        })
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail(std::io::Error::other("not a file name")))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })?;
    Ok(())
}
