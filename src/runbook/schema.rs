//! What each action kind accepts, so a runbook is checked before anything runs.

/// The type a parameter's value must have in the runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Integer,
    Bool,
    /// An array of strings.
    StringList,
    /// A table of string values.
    StringMap,
    /// A string such as `"90s"`, `"5m"` or `"7d"`.
    Duration,
    /// Any TOML value; the action checks it when it runs.
    Any,
}

impl ParamType {
    pub fn describe(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Bool => "true or false",
            ParamType::StringList => "an array of strings",
            ParamType::StringMap => "a table of strings",
            ParamType::Duration => "a duration such as \"90s\", \"5m\" or \"7d\"",
            ParamType::Any => "any value",
        }
    }
}

/// One parameter of an action kind.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub required: bool,
    pub help: &'static str,
}

impl ParamSpec {
    pub const fn required(name: &'static str, ty: ParamType, help: &'static str) -> Self {
        Self {
            name,
            ty,
            required: true,
            help,
        }
    }

    pub const fn optional(name: &'static str, ty: ParamType, help: &'static str) -> Self {
        Self {
            name,
            ty,
            required: false,
            help,
        }
    }
}

/// The parameters and outputs of one action kind.
#[derive(Debug, Clone, Copy)]
pub struct ActionSchema {
    pub kind: &'static str,
    pub summary: &'static str,
    pub params: &'static [ParamSpec],
    /// Outputs every run of this kind exports, on top of a step's declared `outputs`.
    pub outputs: &'static [&'static str],
    /// The step completes only with an operator's note (`manual`).
    pub needs_operator_note: bool,
}

/// The action kinds a runbook may use; implemented by the action registry.
pub trait ActionCatalog {
    fn schema(&self, kind: &str) -> Option<&ActionSchema>;
    fn kinds(&self) -> Vec<&'static str>;
}
