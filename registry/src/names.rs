//! Newtypes for every name and identifier that enters from outside.
//! Each is parsed once at the edge; past it no raw string is trusted.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

fn invalid(what: &str, value: &str, rule: &str) -> Error {
    let shown: String = value.chars().take(80).collect();
    Error::Invalid(format!("invalid {what} {shown:?}: {rule}"))
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A tenant's URL name: `acme`. Lower-case letters, digits and `-`, 2 to 63 characters.
    TenantSlug
);

impl TenantSlug {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let rule = "use 2-63 lower-case letters, digits or '-', starting with a letter";
        let ok = (2..=63).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok { Ok(Self(s.to_owned())) } else { Err(invalid("tenant name", s, rule)) }
    }
}

string_newtype!(
    /// A model's name inside its tenant: `minilm`, `all-MiniLM-L6-v2`.
    ModelName
);

impl ModelName {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let rule = "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit";
        let ok = (1..=128).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok { Ok(Self(s.to_owned())) } else { Err(invalid("model name", s, rule)) }
    }
}

string_newtype!(
    /// An alias of a model: `production`, `staging`.
    AliasName
);

impl AliasName {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let rule = "use 1-63 lower-case letters, digits, '_' or '-', starting with a letter";
        let ok = (1..=63).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if ok { Ok(Self(s.to_owned())) } else { Err(invalid("alias", s, rule)) }
    }
}

/// How a caller names a model in an inference request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// `minilm`: the newest ready version.
    Latest(ModelName),
    /// `minilm:production`
    Alias(ModelName, AliasName),
    /// `minilm@3`
    Version(ModelName, i64),
}

impl ModelRef {
    pub fn parse(s: &str) -> Result<Self, Error> {
        if let Some((name, alias)) = s.split_once(':') {
            return Ok(ModelRef::Alias(ModelName::parse(name)?, AliasName::parse(alias)?));
        }
        if let Some((name, number)) = s.split_once('@') {
            let number = number.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Error::Invalid(format!("invalid version {number:?}: use a positive integer, as in {name}@1"))
            })?;
            return Ok(ModelRef::Version(ModelName::parse(name)?, number));
        }
        Ok(ModelRef::Latest(ModelName::parse(s)?))
    }

    pub fn model_name(&self) -> &ModelName {
        match self {
            ModelRef::Latest(n) | ModelRef::Alias(n, _) | ModelRef::Version(n, _) => n,
        }
    }
}

string_newtype!(
    /// A file's path inside a version: `config.json`, `1_Pooling/config.json`.
    /// Relative, `/`-separated, without `.`/`..` segments, backslashes or control characters.
    FilePath
);

impl FilePath {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let rule = "use a relative path with '/' between folders, without '..', '.', empty \
                    segments, backslashes or control characters (at most 1024 bytes)";
        let ok = !s.is_empty()
            && s.len() <= 1024
            && !s.contains('\\')
            && !s.chars().any(char::is_control)
            && s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.len() <= 255);
        if ok { Ok(Self(s.to_owned())) } else { Err(invalid("file path", s, rule)) }
    }

    /// The last segment: `config.json` for `1_Pooling/config.json`.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

/// A sha256 digest, stored as 64 lower-case hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// Accepts 64 hex characters (any case) or the 44-character base64 form
    /// used by S3's `x-amz-checksum-sha256`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(Self(s.to_ascii_lowercase()));
        }
        if s.len() == 44 {
            use base64::Engine as _;
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s)
                && bytes.len() == 32
            {
                return Ok(Self(hex::encode(bytes)));
            }
        }
        Err(invalid("sha256 digest", s, "use 64 hex characters or 44 base64 characters"))
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(hex::encode(bytes))
    }

    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A role inside one tenant. Each role includes the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads models, versions, aliases and files.
    Viewer,
    /// Also calls inference.
    Invoker,
    /// Also uploads versions and moves aliases.
    Developer,
    /// Also manages the tenant's API keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Invoker => "invoker",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "invoker" => Ok(Role::Invoker),
            "developer" => Ok(Role::Developer),
            "admin" => Ok(Role::Admin),
            _ => Err(invalid("role", s, "use admin, developer, invoker or viewer")),
        }
    }
}

/// What a model is for; decides which runner family serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Sentence embeddings (`/v1/embeddings`).
    Embedding,
    /// Text generation (`/v1/completions`, `/v1/chat/completions`).
    Generation,
    /// Sequence classification: label scores (`/v1/classifications`).
    Classification,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Embedding => "embedding",
            Task::Generation => "generation",
            Task::Classification => "classification",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "embedding" => Ok(Task::Embedding),
            "generation" => Ok(Task::Generation),
            "classification" => Ok(Task::Classification),
            _ => Err(invalid("task", s, "supported tasks: embedding, generation, classification")),
        }
    }

    /// Whether models of this task take text and so need a `tokenizer.json`.
    pub fn is_text(self) -> bool {
        matches!(self, Task::Embedding | Task::Generation | Task::Classification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_that_escape_or_smuggle_are_refused() {
        for bad in ["", "../x", "a/../b", "/etc/passwd", "a\\b", "a//b", "./a", "a/", "a\0b", "a\nb"] {
            assert!(FilePath::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["config.json", "1_Pooling/config.json", "a/b/c.safetensors", "..hidden"] {
            assert_eq!(FilePath::parse(good).map(|p| p.to_string()).ok().as_deref(), Some(good));
        }
        assert_eq!(
            FilePath::parse("1_Pooling/config.json").map(|p| p.file_name().to_owned()).ok().as_deref(),
            Some("config.json")
        );
    }

    #[test]
    fn digests_parse_from_hex_and_base64() {
        let hex = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
        let upper = Digest::parse(&hex.to_uppercase()).map(|d| d.to_string()).ok();
        assert_eq!(upper.as_deref(), Some(hex));
        // base64 of the 32 bytes of the same digest
        let b64 = "U6pRFy0ULInZASzOFa5NbMDKaJWJURQ3nKy0+rEo2ds=";
        assert_eq!(Digest::parse(b64).map(|d| d.to_string()).ok().as_deref(), Some(hex));
        assert!(Digest::parse("abc").is_err());
        assert!(Digest::parse(&"g".repeat(64)).is_err());
    }

    /// `Registry::callable_models` splits its one-row listing on `;`, `:` and `,`, and model
    /// references split on `:` and `@`: a tenant can name nothing that holds them.
    #[test]
    fn model_and_alias_names_never_hold_a_listing_or_reference_separator() {
        for separator in [';', ':', ',', '@'] {
            assert!(ModelName::parse(&format!("a{separator}b")).is_err(), "model name with {separator:?}");
            assert!(AliasName::parse(&format!("a{separator}b")).is_err(), "alias name with {separator:?}");
        }
    }

    #[test]
    fn model_references_parse_in_three_forms() {
        let name = |s: &str| ModelName::parse(s).ok();
        assert_eq!(ModelRef::parse("minilm").ok(), name("minilm").map(ModelRef::Latest));
        assert_eq!(ModelRef::parse("minilm@3").ok(), name("minilm").map(|n| ModelRef::Version(n, 3)));
        let alias = AliasName::parse("production").ok();
        assert_eq!(
            ModelRef::parse("minilm:production").ok(),
            name("minilm").zip(alias).map(|(n, a)| ModelRef::Alias(n, a))
        );
        assert!(ModelRef::parse("minilm@0").is_err());
        assert!(ModelRef::parse("minilm@x").is_err());
        assert!(ModelRef::parse("minilm:").is_err());
        assert!(ModelRef::parse("").is_err());
    }

    #[test]
    fn names_follow_their_rules() {
        assert!(TenantSlug::parse("acme").is_ok());
        assert!(TenantSlug::parse("Acme").is_err());
        assert!(TenantSlug::parse("a").is_err());
        assert!(TenantSlug::parse("acme-").is_err());
        assert!(ModelName::parse("all-MiniLM-L6-v2").is_ok());
        assert!(ModelName::parse("minilm:production").is_err());
        assert!(ModelName::parse("minilm@1").is_err());
        assert!(AliasName::parse("production").is_ok());
        assert!(AliasName::parse("1").is_err());
        assert!(Role::parse("owner").is_err());
        assert!(Role::Admin > Role::Developer && Role::Developer > Role::Invoker && Role::Invoker > Role::Viewer);
    }
}
