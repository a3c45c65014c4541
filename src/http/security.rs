//! The console's protections: sessions, login, CSRF tokens, security headers and TLS.
//!
//! - **Where it may listen.** On a loopback address the console may be plain HTTP. Anywhere
//!   else it needs TLS (the server's `--tls-cert`/`--tls-key`, or `--allow-plaintext` behind a
//!   TLS-terminating proxy) *and* a login, so it refuses to start unless a caller or admin token
//!   is configured ([`check`]).
//! - **Login.** A person signs in by pasting the caller or admin token into a form; the token is
//!   checked by [`AccessPolicy`] exactly as a gRPC bearer token is. The answer is a new session
//!   (its id rotated at login), held in a cookie that is `HttpOnly`, `SameSite=Strict` and, off
//!   loopback or over TLS, `Secure` with the `__Host-` prefix. Sessions expire after
//!   [`SESSION_TTL`]; at most [`MAX_SESSIONS`] are kept (the oldest go first). A login is needed
//!   off loopback, and on loopback too when a caller token is configured.
//! - **CSRF.** Every session has a random token; every console form carries it in a hidden field
//!   and every POST is refused unless it matches (compared in constant time). The cookie's
//!   `SameSite=Strict` is a second wall.
//! - **Headers.** Every answer carries a strict Content-Security-Policy (`default-src 'self'`;
//!   no inline script or style; `frame-ancestors 'none'`; forms post only to this origin),
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and console pages are
//!   `Cache-Control: no-store` (they may show facts about a child).
//! - **The JSON API** authenticates by `Authorization: Bearer`, never by cookie, so CSRF cannot
//!   reach it; its access is the gRPC decision methods' (open unless a caller token is set).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use crate::grpc::auth::{Access, AccessPolicy, MethodInfo};
use crate::grpc::transport::TlsSettings;
use crate::error::ServeError;

/// How long a session lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// Most sessions kept at once.
pub(crate) const MAX_SESSIONS: usize = 10_000;

/// The Content-Security-Policy of every answer.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A random token (256 bits, hex).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One visitor's session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The session id (the cookie's value).
    pub id: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// Whether the visitor has signed in.
    pub signed_in: bool,
    created: Instant,
}

/// The sessions, in memory: a restart signs everyone out.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(id).filter(|s| s.created.elapsed() < SESSION_TTL).cloned()
    }

    /// A new session, signed in or not.
    pub(crate) fn create(&self, signed_in: bool) -> Session {
        let s = Session { id: random_token(), csrf: random_token(), signed_in, created: Instant::now() };
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, v| v.created.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, v)| v.created).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(s.id.clone(), s.clone());
        s
    }

    /// Ends a session.
    pub(crate) fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }
}

/// How the console protects itself (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct Security {
    /// Who may sign in, and who may call the JSON API.
    pub access: AccessPolicy,
    /// Whether console pages need a login.
    pub login_required: bool,
    /// Whether cookies are `Secure` (TLS here, or off loopback behind a TLS proxy).
    pub secure_cookies: bool,
    /// The sessions.
    pub sessions: Arc<Sessions>,
}

impl Security {
    /// The cookie's name: `__Host-` prefixed when secure.
    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.secure_cookies { "__Host-cpc_session" } else { "cpc_session" }
    }

    /// The `Set-Cookie` value for `session`.
    pub(crate) fn cookie(&self, session: &Session) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{}={}; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age={}", self.cookie_name(), session.id, SESSION_TTL.as_secs()))
            .expect("a session cookie is ASCII")
    }

    /// The `Set-Cookie` value that ends the session cookie.
    pub(crate) fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{}=; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age=0", self.cookie_name())).expect("ASCII")
    }

    fn session_of(&self, headers: &HeaderMap) -> Option<Session> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| self.sessions.get(v))
    }

    /// Whether `token` is the caller or admin token.
    pub(crate) fn token_signs_in(&self, token: &str) -> bool {
        let t = token.trim().as_bytes();
        self.access.admin_token.as_ref().is_some_and(|s| s.matches(t)) || self.access.caller_token.as_ref().is_some_and(|s| s.matches(t))
    }
}

/// Whether a submitted CSRF token is the session's.
pub(crate) fn csrf_ok(session: &Session, submitted: Option<&str>) -> bool {
    submitted.is_some_and(|s| bool::from(s.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// Refuses a console that would be reachable off loopback without TLS or without a login.
pub(crate) fn check(addr: SocketAddr, tls: Option<&TlsSettings>, allow_plaintext: bool, access: &AccessPolicy) -> Result<(), ServeError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if tls.is_none() && !allow_plaintext {
        return Err(ServeError::Refused(format!(
            "refusing to serve the console on {addr}, which is not a loopback address, without TLS: give --tls-cert and --tls-key \
             (or --allow-plaintext behind a TLS-terminating proxy), or use a loopback --console-addr"
        )));
    }
    if access.admin_token.is_none() && access.caller_token.is_none() {
        return Err(ServeError::Refused(format!(
            "refusing to serve the console on {addr}, which is not a loopback address, without a login: configure a caller or admin \
             token (--caller-token-file / CPC_CALLER_TOKEN, --admin-token-file / CPC_ADMIN_TOKEN); people sign in with it"
        )));
    }
    Ok(())
}

/// Security headers on every answer; `no-store` on everything but static assets.
pub(crate) async fn headers(request: Request, next: Next) -> Response {
    let cacheable = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=()"));
    if !cacheable {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Console pages: finds or starts the visitor's session (an extension of the request), and
/// sends a visitor who must sign in and has not to the login page.
pub(crate) async fn console_session(State(security): State<Arc<Security>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let existing = security.session_of(request.headers());
    let (session, new) = match existing {
        Some(s) => (s, false),
        None => (security.sessions.create(false), true),
    };
    if security.login_required && !session.signed_in && path != "/login" {
        let mut r = Redirect::to("/login").into_response();
        if new {
            r.headers_mut().append(header::SET_COOKIE, security.cookie(&session));
        }
        return r;
    }
    request.extensions_mut().insert(session.clone());
    let mut response = next.run(request).await;
    if new && !response.headers().contains_key(header::SET_COOKIE) {
        response.headers_mut().append(header::SET_COOKIE, security.cookie(&session));
    }
    response
}

/// The JSON API: the access the gRPC decision methods need, by bearer token.
pub(crate) async fn api_auth(State(security): State<Arc<Security>>, request: Request, next: Next) -> Response {
    let method = MethodInfo { label: "http", access: Access::Caller, limited: true };
    let auth = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    match security.access.check(method, auth, None) {
        Ok(()) => next.run(request).await,
        Err(status) => {
            tracing::info!(code = crate::grpc::status::code_name(status.code()), "HTTP API call refused: credentials");
            super::errors::ApiError::from(&status).into_response()
        }
    }
}

/// rustls' server configuration from the server's PEM certificate chain and key (no client
/// certificates: people sign in with a token).
pub(crate) fn tls_config(tls: &TlsSettings) -> Result<tokio_rustls::rustls::ServerConfig, ServeError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| ServeError::failed("reading the TLS certificate chain", e))?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| ServeError::failed("reading the TLS private key", e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::failed("TLS protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::failed("the TLS certificate and key do not match", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::auth::Secret;

    #[test]
    fn off_loopback_needs_tls_and_a_login() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let none = AccessPolicy::default();
        assert!(check(lo, None, false, &none).is_ok());
        assert!(check(any, None, false, &none).unwrap_err().to_string().contains("without TLS"));
        assert!(check(any, None, true, &none).unwrap_err().to_string().contains("without a login"));
        let with_token = AccessPolicy { caller_token: Some(Secret::new("0123456789abcdef0123").unwrap()), ..AccessPolicy::default() };
        assert!(check(any, None, true, &with_token).is_ok());
    }

    #[test]
    fn csrf_tokens_must_match() {
        let sessions = Sessions::default();
        let s = sessions.create(false);
        assert!(csrf_ok(&s, Some(&s.csrf.clone())));
        assert!(!csrf_ok(&s, Some("nope")));
        assert!(!csrf_ok(&s, None));
        assert_ne!(s.csrf, sessions.create(false).csrf);
    }
}
