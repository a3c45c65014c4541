//! Who may call what: the access policy and its credentials.
//!
//! Each method needs one of three levels of [`Access`] ([`method_access`]):
//!
//! - **open**: the health service and server reflection, so load balancers and `grpcurl` work
//!   without credentials;
//! - **caller**: every `DecisionService` RPC and `RulesService.ListPartnerships` — open when no
//!   caller token is configured, otherwise the caller token (or any admin credential) is needed;
//! - **auditor**: every `RecordService` RPC (the decision record: facts about children) — always
//!   needs the auditor token, an auditor client certificate (`--auditor-client-cn`) or any admin
//!   credential; a caller token is not enough;
//! - **admin**: `RulesService.ReloadRules` and any other `RulesService` method added later —
//!   always needs an admin credential: the admin bearer token, or a client certificate (verified
//!   by mutual TLS) whose subject CN or a subject alternative name is listed as an admin.
//!
//! [`AccessPolicy::identify`] names who a call came from (`caller-token`, `cert:<name>`, …) for
//! the decision record's "who asked"; the guard puts it on the request as a [`CallerIdentity`].
//!
//! Credentials are sent as `authorization: Bearer <token>` metadata. A missing or wrong
//! credential is `UNAUTHENTICATED`; a good credential without the level the method needs (a
//! caller token, or a client certificate not listed, on an admin method) is
//! `PERMISSION_DENIED`. Tokens are compared in constant time (as SHA-256 digests, so neither
//! their content nor their length leaks through timing) and are never logged or shown by
//! `Debug`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;

use super::status;

/// Shortest token accepted in configuration (bytes): a short token is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// A bearer token from configuration. Only its digest is kept.
#[derive(Clone)]
pub struct Secret {
    digest: [u8; 32],
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.digest.ct_eq(&other.digest))
    }
}

impl Eq for Secret {}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

impl Secret {
    /// A token read from a file or the environment; surrounding whitespace (a trailing newline)
    /// is dropped. Refused if shorter than [`MIN_TOKEN_LEN`] or if it holds whitespace or
    /// control characters (it could not be sent in an `authorization` header).
    pub fn new(token: &str) -> Result<Secret, String> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!("is shorter than {MIN_TOKEN_LEN} characters; use a long random token (e.g. `openssl rand -hex 32`)"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
            return Err("may only hold printable ASCII characters without spaces".into());
        }
        Ok(Secret { digest: digest(token.as_bytes()) })
    }

    /// Whether `presented` is this token, in time that does not depend on either's content.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.digest.ct_eq(&digest(presented)))
    }
}

/// Who may call what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The admin bearer token, if configured.
    pub admin_token: Option<Secret>,
    /// The caller bearer token, if configured; without one, caller methods are open.
    pub caller_token: Option<Secret>,
    /// Client-certificate identities (subject CN or subject alternative name) that are admins.
    pub admin_client_names: Vec<String>,
    /// The auditor bearer token (the decision record's `RecordService`), if configured.
    pub auditor_token: Option<Secret>,
    /// Client-certificate identities that are auditors.
    pub auditor_client_names: Vec<String>,
}

/// Who a call came from, as the decision record stores it: `admin-token`, `auditor-token`,
/// `caller-token`, `cert:<first certificate name>` or `anonymous`. Put on each request by the
/// guard. Names a credential, never shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity(pub String);

/// The level of access a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// No credential needed.
    Open,
    /// A caller credential when one is configured.
    Caller,
    /// An auditor (or admin) credential, always.
    Auditor,
    /// An admin credential, always.
    Admin,
}

/// A call's method, as the access policy, the limits and the metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// A bounded name for logs and metric labels (`CheckAttendance`, `health`, `other`).
    pub label: &'static str,
    /// The access it needs.
    pub access: Access,
    /// Whether the server's rate and concurrency limits apply (not to health checks, so that a
    /// busy server is not taken for a dead one).
    pub limited: bool,
}

const DECISION_METHODS: [&str; 7] = [
    "CheckAttendance",
    "CheckExclusion",
    "CheckChildInvitation",
    "DeterminePlanType",
    "CheckComplaintEligibility",
    "ComputeTimescales",
    "Evaluate",
];

/// Classifies a call by its HTTP/2 path (`/cpc.v1.DecisionService/Evaluate`).
pub fn method_access(path: &str) -> MethodInfo {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let caller = |label| MethodInfo { label, access: Access::Caller, limited: true };
    match service {
        "cpc.v1.DecisionService" => match DECISION_METHODS.iter().find(|m| **m == method) {
            Some(m) => caller(m),
            None => caller("other"),
        },
        "cpc.v1.RulesService" => match method {
            "ListPartnerships" => caller("ListPartnerships"),
            "ReloadRules" => MethodInfo { label: "ReloadRules", access: Access::Admin, limited: true },
            // Any RulesService method added later is an admin method until decided otherwise.
            _ => MethodInfo { label: "other", access: Access::Admin, limited: true },
        },
        "cpc.v1.RecordService" => {
            let label = match method {
                "GetDecision" => "GetDecision",
                "ListDecisions" => "ListDecisions",
                "ReplayDecision" => "ReplayDecision",
                "ListRevisions" => "ListRevisions",
                _ => "other",
            };
            MethodInfo { label, access: Access::Auditor, limited: true }
        }
        "grpc.health.v1.Health" => MethodInfo { label: "health", access: Access::Open, limited: false },
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            MethodInfo { label: "reflection", access: Access::Open, limited: true }
        }
        _ => caller("other"),
    }
}

/// The role a call's credentials give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Nothing presented.
    None,
    /// A verified client certificate not listed as an admin.
    Authenticated,
    /// The caller token.
    Caller,
    /// The auditor token or an auditor client certificate.
    Auditor,
    /// The admin token or an admin client certificate.
    Admin,
}

impl AccessPolicy {
    /// Whether any admin credential is configured.
    pub fn has_admin(&self) -> bool {
        self.admin_token.is_some() || !self.admin_client_names.is_empty()
    }

    /// Whether any auditor (or admin) credential is configured.
    pub fn has_auditor(&self) -> bool {
        self.has_admin() || self.auditor_token.is_some() || !self.auditor_client_names.is_empty()
    }

    /// Who a call carrying `authorization` and `peer_names` came from (see [`CallerIdentity`]).
    /// Only meaningful for a call the policy let through.
    pub fn identify(&self, authorization: Option<&[u8]>, peer_names: Option<&[String]>) -> CallerIdentity {
        let token = authorization.and_then(bearer);
        let name = match token {
            Some(t) if self.admin_token.as_ref().is_some_and(|s| s.matches(t)) => "admin-token".to_string(),
            Some(t) if self.auditor_token.as_ref().is_some_and(|s| s.matches(t)) => "auditor-token".to_string(),
            Some(t) if self.caller_token.as_ref().is_some_and(|s| s.matches(t)) => "caller-token".to_string(),
            _ => match peer_names.and_then(|n| n.first()) {
                Some(n) => format!("cert:{}", super::guard::loggable(n)),
                None => "anonymous".to_string(),
            },
        };
        CallerIdentity(name)
    }

    /// Checks a call to `method` carrying the `authorization` header value `authorization` and,
    /// over mutual TLS, the verified client certificate's names `peer_names` (`None` without
    /// one). Returns the status to answer with when the call may not go ahead.
    pub fn check(&self, method: MethodInfo, authorization: Option<&[u8]>, peer_names: Option<&[String]>) -> Result<(), Status> {
        if method.access == Access::Open {
            return Ok(());
        }
        let token_role = match authorization {
            None => Role::None,
            Some(value) => {
                let Some(token) = bearer(value) else {
                    return Err(status::unauthenticated("the authorization metadata is not `Bearer <token>`"));
                };
                if self.admin_token.as_ref().is_some_and(|s| s.matches(token)) {
                    Role::Admin
                } else if self.auditor_token.as_ref().is_some_and(|s| s.matches(token)) {
                    Role::Auditor
                } else if self.caller_token.as_ref().is_some_and(|s| s.matches(token)) {
                    Role::Caller
                } else {
                    return Err(status::unauthenticated("the bearer token is not valid"));
                }
            }
        };
        let cert_role = match peer_names {
            None => Role::None,
            Some(names) if names.iter().any(|n| self.admin_client_names.iter().any(|a| a.eq_ignore_ascii_case(n))) => Role::Admin,
            Some(names) if names.iter().any(|n| self.auditor_client_names.iter().any(|a| a.eq_ignore_ascii_case(n))) => Role::Auditor,
            Some(_) => Role::Authenticated,
        };
        let role = token_role.max(cert_role);
        match method.access {
            Access::Open => Ok(()),
            Access::Caller if self.caller_token.is_none() || role >= Role::Caller => Ok(()),
            Access::Caller if role == Role::None => Err(status::unauthenticated(&format!("{} needs a caller credential", method.label))),
            Access::Caller => Err(status::permission_denied(method.label, "the caller token or an admin credential")),
            Access::Auditor if role >= Role::Auditor => Ok(()),
            Access::Auditor if role == Role::None && !self.has_auditor() => Err(status::unauthenticated(&format!(
                "{} needs an auditor or admin credential, and none is configured on this server (--auditor-token-file or --admin-token-file)",
                method.label
            ))),
            Access::Auditor if role == Role::None => Err(status::unauthenticated(&format!("{} needs an auditor or admin credential", method.label))),
            Access::Auditor => Err(status::permission_denied(method.label, "the auditor token or an admin credential")),
            Access::Admin if role == Role::Admin => Ok(()),
            Access::Admin if role == Role::None && !self.has_admin() => Err(status::unauthenticated(&format!(
                "{} needs an admin credential, and none is configured on this server (--admin-token-file, CPC_ADMIN_TOKEN or --admin-client-cn); rules also reload on file changes and SIGHUP",
                method.label
            ))),
            Access::Admin if role == Role::None => Err(status::unauthenticated(&format!("{} needs an admin credential", method.label))),
            Access::Admin => Err(status::permission_denied(method.label, "an admin credential")),
        }
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme in any case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The names a client certificate (DER) identifies itself by: each subject common name and
/// each DNS, email and URI subject alternative name. Empty if it cannot be parsed (it was
/// already verified by TLS, so this does not happen in practice).
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => names.push((*s).to_string()),
                _ => {}
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const ADMIN: &str = "admin-token-0123456789abcdef";
    const CALLER: &str = "caller-token-0123456789abcdef";
    const AUDITOR: &str = "auditor-token-0123456789abcdef";

    #[test]
    fn the_record_needs_an_auditor_or_admin() {
        let p = policy();
        let get = "/cpc.v1.RecordService/GetDecision";
        assert_eq!(code(&p, get, Some(&format!("Bearer {AUDITOR}")), None), Code::Ok);
        assert_eq!(code(&p, get, Some(&format!("Bearer {ADMIN}")), None), Code::Ok);
        assert_eq!(code(&p, get, Some(&format!("Bearer {CALLER}")), None), Code::PermissionDenied);
        assert_eq!(code(&p, get, None, None), Code::Unauthenticated);
        assert_eq!(code(&p, RELOAD, Some(&format!("Bearer {AUDITOR}")), None), Code::PermissionDenied);
        assert_eq!(p.identify(Some(format!("Bearer {CALLER}").as_bytes()), None).0, "caller-token");
        assert_eq!(p.identify(None, Some(&["case-system".to_string()])).0, "cert:case-system");
        assert_eq!(p.identify(None, None).0, "anonymous");
        assert_eq!(code(&AccessPolicy::default(), get, None, None), Code::Unauthenticated);
    }

    fn policy() -> AccessPolicy {
        AccessPolicy {
            admin_token: Some(Secret::new(ADMIN).unwrap()),
            caller_token: Some(Secret::new(CALLER).unwrap()),
            admin_client_names: vec!["ops.example".into()],
            auditor_token: Some(Secret::new(AUDITOR).unwrap()),
            auditor_client_names: Vec::new(),
        }
    }

    fn code(p: &AccessPolicy, path: &str, auth: Option<&str>, names: Option<&[String]>) -> Code {
        match p.check(method_access(path), auth.map(str::as_bytes), names) {
            Ok(()) => Code::Ok,
            Err(s) => s.code(),
        }
    }

    const RELOAD: &str = "/cpc.v1.RulesService/ReloadRules";
    const DECIDE: &str = "/cpc.v1.DecisionService/Evaluate";

    #[test]
    fn tokens_grant_their_level() {
        let p = policy();
        let admin = format!("Bearer {ADMIN}");
        let caller = format!("bearer {CALLER}");
        assert_eq!(code(&p, RELOAD, Some(&admin), None), Code::Ok);
        assert_eq!(code(&p, DECIDE, Some(&admin), None), Code::Ok);
        assert_eq!(code(&p, DECIDE, Some(&caller), None), Code::Ok);
        assert_eq!(code(&p, RELOAD, Some(&caller), None), Code::PermissionDenied);
        assert_eq!(code(&p, RELOAD, None, None), Code::Unauthenticated);
        assert_eq!(code(&p, DECIDE, None, None), Code::Unauthenticated);
        assert_eq!(code(&p, DECIDE, Some("Bearer wrong-token-0123456789"), None), Code::Unauthenticated);
        assert_eq!(code(&p, DECIDE, Some(ADMIN), None), Code::Unauthenticated, "no scheme");
        assert_eq!(code(&p, DECIDE, Some(&format!("Basic {ADMIN}")), None), Code::Unauthenticated);
        assert_eq!(code(&p, "/grpc.health.v1.Health/Check", None, None), Code::Ok);
        assert_eq!(code(&p, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", None, None), Code::Ok);
        assert_eq!(code(&p, "/cpc.v1.RulesService/Future", Some(&caller), None), Code::PermissionDenied);
    }

    #[test]
    fn client_certificates_can_be_admins() {
        let p = AccessPolicy { admin_client_names: vec!["ops.example".into()], ..AccessPolicy::default() };
        let admin = vec!["OPS.example".to_string()];
        let other = vec!["case-system".to_string()];
        assert_eq!(code(&p, RELOAD, None, Some(&admin)), Code::Ok);
        assert_eq!(code(&p, RELOAD, None, Some(&other)), Code::PermissionDenied);
        assert_eq!(code(&p, RELOAD, None, None), Code::Unauthenticated);
        assert_eq!(code(&p, DECIDE, None, None), Code::Ok, "no caller token: decisions are open");
    }

    #[test]
    fn without_admin_credentials_reload_is_refused() {
        let p = AccessPolicy::default();
        assert_eq!(code(&p, RELOAD, None, None), Code::Unauthenticated);
        assert_eq!(code(&p, DECIDE, None, None), Code::Ok);
    }

    #[test]
    fn weak_tokens_are_refused_and_secrets_are_not_shown() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("has a space in it 0123456789").is_err());
        let s = Secret::new("  0123456789abcdef0123\n").unwrap();
        assert!(s.matches(b"0123456789abcdef0123"));
        assert!(!s.matches(b"0123456789abcdef012"));
        assert!(!format!("{s:?}").contains("0123"));
        assert!(!format!("{:?}", policy()).contains(ADMIN));
    }
}
