//! The web console and the JSON API, over HTTP on one port (`serve --console-addr`).
//!
//! Policy leads and complaint panels use the **console**: server-rendered pages that work
//! without JavaScript ([`pages`]), with decision forms generated from each kind's fact
//! vocabulary ([`forms`]). Systems that do not speak gRPC use the **JSON API** under `/v1/`
//! ([`json`], described by the OpenAPI document in [`openapi`]). Both make decisions through the
//! same [`Decider`] as the gRPC service — the same admission queue, deadlines, metrics and
//! logs — and report refusals through [`errors`], which reads back the gRPC status so the codes
//! and details are the same on every transport. [`security`] keeps the console safe (TLS and a
//! login off loopback, CSRF tokens, a strict Content-Security-Policy); [`register`] compares
//! partnerships and lists their assumptions; [`lookup`] is where the decision record will plug
//! in. Nothing here logs facts: the request log has the method, the route template and the
//! status only.

pub(crate) mod errors;
pub(crate) mod forms;
pub mod json;
pub mod limits;
pub mod lookup;
pub(crate) mod openapi;
pub(crate) mod pages;
pub(crate) mod register;
pub(crate) mod security;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Form, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde_json::Value;

use crate::facts::FieldViolation;
use crate::grpc::auth::AccessPolicy;
use crate::grpc::convert::EdgeRequest;
use crate::grpc::limits::Deadline;
use crate::grpc::service::Decider;
use crate::grpc::transport::TlsSettings;
use crate::error::ServeError;
use crate::vocabulary::{FactType, KindSchema};
use errors::ApiError;
use forms::FormState;
use lookup::{DecisionLookup, NoRecord};
use pages::Section;
use security::{Security, Session, Sessions, csrf_ok};

/// The address the console listens on when `--console-addr` is given without one.
pub const DEFAULT_CONSOLE_ADDR: &str = "127.0.0.1:8080";

/// The kind the admissibility page decides.
pub const ADMISSIBILITY_KIND: &str = "complaint_eligibility";

/// How the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// TLS (the server's certificate and key); `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Plain HTTP off loopback (only behind a TLS-terminating proxy).
    pub allow_plaintext: bool,
    /// Tokens for the login and the API (the gRPC server's).
    pub access: AccessPolicy,
    /// Longest a decision may take.
    pub request_timeout: Duration,
    /// Largest request body accepted (bytes).
    pub max_request_bytes: usize,
    /// Where decisions are looked up by id.
    pub lookup: Arc<dyn DecisionLookup>,
    /// Rate limits on `POST`s: the gRPC port's server-wide bucket and a per-client limit.
    pub limits: Arc<limits::HttpLimits>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            tls: None,
            allow_plaintext: false,
            access: AccessPolicy::default(),
            request_timeout: Duration::from_secs(10),
            max_request_bytes: 1024 * 1024,
            lookup: Arc::new(NoRecord),
            limits: Arc::new(limits::HttpLimits::default()),
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
struct Console {
    decider: Decider,
    security: Arc<Security>,
    lookup: Arc<dyn DecisionLookup>,
    request_timeout: Duration,
    limits: Arc<limits::HttpLimits>,
}

type St = Arc<Console>;

/// The console and API routes over `decider`, as served on `local`.
pub fn router(decider: Decider, config: &ConsoleConfig, local: SocketAddr) -> Router {
    let off_loopback = !local.ip().is_loopback();
    let security = Arc::new(Security {
        access: config.access.clone(),
        login_required: off_loopback || config.access.caller_token.is_some(),
        secure_cookies: config.tls.is_some() || off_loopback,
        sessions: Arc::new(Sessions::default()),
    });
    let state: St = Arc::new(Console { decider, security: Arc::clone(&security), lookup: Arc::clone(&config.lookup), request_timeout: config.request_timeout, limits: Arc::clone(&config.limits) });

    let console = Router::new()
        .route("/", get(partnerships_page))
        .route("/decide", get(decide_index))
        .route("/decide/{partnership}/{kind}", get(decide_form).post(decide_submit))
        .route("/admissibility", get(admissibility_form).post(admissibility_submit))
        .route("/compare", get(compare_page))
        .route("/assumptions", get(assumptions_page))
        .route("/decisions", get(lookup_page))
        .route("/decisions/replay", post(replay))
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", post(logout))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&security), security::console_session));
    let api = Router::new()
        .route("/v1/partnerships", get(api_partnerships))
        .route("/v1/partnerships/{partnership}/decisions/{kind}", post(api_decide))
        .layer(middleware::from_fn_with_state(Arc::clone(&security), security::api_auth));
    Router::new()
        .route("/v1/openapi.json", get(api_openapi))
        .route("/static/console.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("static/console.css")) }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/static/console.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("static/console.js")) }))
        .merge(api)
        .merge(console)
        .layer(DefaultBodyLimit::max(config.max_request_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), rate_limit))
        .layer(middleware::from_fn(access_log))
        .layer(middleware::from_fn(security::headers))
        .with_state(state)
}

/// Refuses a `POST` over the rate limits ([`limits`]) with 429 and `Retry-After`: JSON on the
/// API, a page in the console.
async fn rate_limit(State(c): State<St>, request: Request, next: Next) -> Response {
    let Err((why, wait)) = c.limits.check(&request) else {
        return next.run(request).await;
    };
    c.decider.metrics().shed(why.reason());
    let error = ApiError::from(crate::grpc::status::overloaded(why, wait));
    if request.uri().path().starts_with("/v1/") {
        return error.into_response();
    }
    let mut page = c.status_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        &format!("The server is receiving more requests than it takes. Nothing was decided or changed. Wait {} second(s) and send the form again.", wait.as_secs().max(1)),
        None,
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        page.headers_mut().insert(header::RETRY_AFTER, v);
    }
    page
}

/// One line per request: method, route template, status, latency. Never the body or query.
async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "(unmatched)".to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    tracing::debug!(%method, %route, status = response.status().as_u16(), latency_ms = started.elapsed().as_secs_f64() * 1000.0, "HTTP request");
    response
}

/// Serves the console and API on `listener` with `decider` until `shutdown` resolves. Refuses
/// to start off loopback without TLS and a login ([`security::check`]).
pub async fn serve(listener: tokio::net::TcpListener, decider: Decider, config: ConsoleConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let local = listener.local_addr().map_err(|e| ServeError::failed("the console listener has no local address", e))?;
    security::check(local, config.tls.as_ref(), config.allow_plaintext, &config.access)?;
    let app = router(decider, &config, local);
    tracing::info!(addr = %local, tls = config.tls.is_some(), "console and JSON API listening");
    match &config.tls {
        None => axum::serve(listener, app.into_make_service_with_connect_info::<limits::PeerAddr>()).with_graceful_shutdown(shutdown).await.map_err(|e| ServeError::failed("the console failed", e))?,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(security::tls_config(tls)?));
            axum::serve(TlsListener::new(listener, acceptor), app.into_make_service_with_connect_info::<limits::PeerAddr>()).with_graceful_shutdown(shutdown).await.map_err(|e| ServeError::failed("the console failed", e))?;
        }
    }
    tracing::info!("console stopped");
    Ok(())
}

/// A listener that hands out connections once their TLS handshake is done; handshakes run in
/// their own tasks (at most 10 seconds each), so a slow client holds up no one else.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accept: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let accept = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "console: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "console: TLS handshake failed"),
                        Err(_) => tracing::debug!("console: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, local, _accept: accept }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._accept.abort();
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for limits::PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        limits::PeerAddr(*stream.remote_addr())
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

// ------------------------------------------------------------------------------------------
// Shared helpers
// ------------------------------------------------------------------------------------------

impl Console {
    fn page(&self, title: &str, section: Section, session: Option<&Session>, body: Markup) -> Html<String> {
        Html(pages::layout(title, section, session, self.security.login_required, body).into_string())
    }

    fn status_page(&self, status: StatusCode, title: &str, text: &str, session: Option<&Session>) -> Response {
        (status, self.page(title, Section::None, session, pages::message(title, text))).into_response()
    }

    /// One decision through the shared decider, with the server's request timeout.
    async fn decide(&self, partnership: &str, kind: &str, facts: Value, problems: Vec<FieldViolation>) -> Result<json::Decision, ApiError> {
        let addressing = crate::grpc::convert::addressing(partnership, Some(kind), "");
        if !addressing.is_empty() {
            return Err(ApiError::from(self.decider.refused(addressing)));
        }
        let req = EdgeRequest { partnership: partnership.to_string(), kind: kind.to_string(), facts, case_ref: String::new(), problems, facts_field: None };
        let deadline = Deadline(Instant::now() + self.request_timeout);
        self.decider.decide_as(req, Some(deadline), "console").await.map(json::Decision::from).map_err(ApiError::from)
    }

    fn schema(&self, partnership: &str, kind: &str) -> Option<(String, Arc<KindSchema>)> {
        let loaded = self.decider.store().get(partnership)?;
        let k = loaded.set.kind(kind)?;
        Some((loaded.set.metadata().name.clone(), Arc::clone(&k.schema)))
    }
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn expired(c: &Console, session: &Session) -> Response {
    c.status_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "For your security, forms only work for a limited time and from this site. Go back, reload the page and send the form again.",
        Some(session),
    )
}

/// Problems for the error summary, and errors by field, from a refusal.
fn form_errors(schema: &KindSchema, state: &FormState, e: &ApiError) -> (Vec<(Option<String>, String)>, std::collections::BTreeMap<String, Vec<String>>) {
    if e.violations.is_empty() {
        return (vec![(None, pages::refusal_text(e))], Default::default());
    }
    let placed = forms::place_errors(schema, state, &e.violations);
    let summary = placed.iter().flat_map(|(path, msgs)| msgs.iter().map(move |m| (pages::target(path), m.clone()))).collect();
    (summary, placed)
}

// ------------------------------------------------------------------------------------------
// Console pages
// ------------------------------------------------------------------------------------------

async fn partnerships_page(State(c): State<St>, Extension(session): Extension<Session>) -> Html<String> {
    let list: Vec<json::Partnership> = json::partnerships(c.decider.store()).into_iter().map(Into::into).collect();
    c.page("Partnerships", Section::Partnerships, Some(&session), pages::partnerships(&list))
}

async fn decide_index(State(c): State<St>, Extension(session): Extension<Session>) -> Html<String> {
    let store = c.decider.store();
    let list: Vec<_> = store
        .ids()
        .into_iter()
        .filter_map(|id| store.get(&id))
        .map(|l| (l.set.id().to_string(), l.set.metadata().name.clone(), l.set.kinds().map(|k| (k.name.clone(), k.schema.doc.clone())).collect()))
        .collect();
    c.page("Make a decision", Section::Decide, Some(&session), pages::decide_index(&list))
}

struct FormView<'a> {
    partnership: &'a str,
    name: &'a str,
    schema: &'a KindSchema,
    state: &'a FormState,
    summary: Vec<(Option<String>, String)>,
    errors: std::collections::BTreeMap<String, Vec<String>>,
    result: Option<json::Decision>,
    csrf: &'a str,
}

fn decide_body(v: FormView<'_>) -> Markup {
    use maud::html;
    let kind_title = pages::humanize(&v.schema.name);
    html! {
        p class="breadcrumb" { a href="/decide" { "Make a decision" } " › " (v.name) }
        @if v.result.is_none() { h1 { (kind_title) ": " (v.name) } }
        (pages::error_summary(&v.summary))
        @if let Some(d) = &v.result {
            h1 class="visually-hidden" { (kind_title) ": " (v.name) }
            (pages::decision(d, true, "The decision"))
            h2 { "Change the facts" }
        }
        p class="lead" { (v.schema.doc) " Give the facts you know; if the rules need one you have left out, the form says which." }
        form method="post" action=(format!("/decide/{}/{}", v.partnership, v.schema.name)) novalidate {
            input type="hidden" name="_csrf" value=(v.csrf);
            (forms::fields(v.schema, v.state, &v.errors, 1))
            button type="submit" name="_action" value="decide" { "Make the decision" }
        }
    }
}

async fn decide_form(State(c): State<St>, Extension(session): Extension<Session>, Path((partnership, kind)): Path<(String, String)>) -> Response {
    let Some((name, schema)) = c.schema(&partnership, &kind) else {
        return not_found(State(c), Extension(session)).await;
    };
    let state = FormState::default();
    let body = decide_body(FormView { partnership: &partnership, name: &name, schema: &schema, state: &state, summary: vec![], errors: Default::default(), result: None, csrf: &session.csrf });
    c.page(&format!("{} – {name}", pages::humanize(&kind)), Section::Decide, Some(&session), body).into_response()
}

async fn decide_submit(
    State(c): State<St>,
    Extension(session): Extension<Session>,
    Path((partnership, kind)): Path<(String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    if !csrf_ok(&session, field(&pairs, "_csrf")) {
        return expired(&c, &session);
    }
    let Some((name, schema)) = c.schema(&partnership, &kind) else {
        return not_found(State(c), Extension(session)).await;
    };
    let mut state = FormState::from_pairs(&schema, &pairs);
    let action = field(&pairs, "_action").unwrap_or("decide");
    let title = format!("{} – {name}", pages::humanize(&kind));
    let adding = action.strip_prefix("add:");
    if let Some(list) = adding {
        forms::add_row(&mut state, list, 1);
    }
    let mut view = FormView { partnership: &partnership, name: &name, schema: &schema, state: &state, summary: vec![], errors: Default::default(), result: None, csrf: &session.csrf };
    if adding.is_some() {
        return c.page(&title, Section::Decide, Some(&session), decide_body(view)).into_response();
    }
    let (facts, problems) = state.facts(&schema);
    match c.decide(&partnership, &kind, facts, problems).await {
        Ok(d) => {
            view.result = Some(d);
            c.page(&format!("Decision: {title}"), Section::Decide, Some(&session), decide_body(view)).into_response()
        }
        Err(e) => {
            let (summary, errors) = form_errors(&schema, &state, &e);
            view.summary = summary;
            view.errors = errors;
            let status = if e.violations.is_empty() { e.http_status() } else { StatusCode::UNPROCESSABLE_ENTITY };
            (status, c.page(&format!("Error: {title}"), Section::Decide, Some(&session), decide_body(view))).into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct PartnershipQuery {
    partnership: Option<String>,
}

fn admissibility_partnerships(c: &Console) -> Vec<(String, String)> {
    let store = c.decider.store();
    store.ids().into_iter().filter_map(|id| store.get(&id)).filter(|l| l.set.kind(ADMISSIBILITY_KIND).is_some()).map(|l| (l.set.id().to_string(), l.set.metadata().name.clone())).collect()
}

struct AdmissibilityView<'a> {
    partnerships: &'a [(String, String)],
    chosen: &'a str,
    schema: Option<&'a KindSchema>,
    state: &'a FormState,
    summary: Vec<(Option<String>, String)>,
    errors: std::collections::BTreeMap<String, Vec<String>>,
    result: Option<Markup>,
    csrf: &'a str,
}

fn admissibility_body(v: AdmissibilityView<'_>) -> Markup {
    use maud::html;
    let p_error = v.errors.get("_partnership");
    html! {
        @if let Some(result) = &v.result {
            (result)
            h2 class="no-print" { "Check another complaint, or change this one" }
        } @else {
            h1 { "Stage 2 admissibility" }
            p class="lead" { "For complaint panels: whether a complaint about a child protection conference can be heard at Stage 2. Enter the complaint as the complainant made it — each ground in their own words." }
        }
        (pages::error_summary(&v.summary))
        form method="post" action="/admissibility" novalidate class="no-print" {
            input type="hidden" name="_csrf" value=(v.csrf);
            div class=(if p_error.is_some() { "field field-has-error" } else { "field" }) {
                label for="f-_partnership" { "Partnership" }
                p class="hint" id="f-_partnership-hint" { "Whose complaints procedure applies." }
                @if let Some(e) = p_error { p class="field-error" id="f-_partnership-error" { span class="visually-hidden" { "Error: " } (e.join(" ")) } }
                select id="f-_partnership" name="_partnership" aria-describedby=(if p_error.is_some() { "f-_partnership-hint f-_partnership-error" } else { "f-_partnership-hint" }) {
                    @for (id, name) in v.partnerships {
                        option value=(id) selected[id == v.chosen] { (name) }
                    }
                }
            }
            @if let Some(schema) = v.schema {
                (forms::fields(schema, v.state, &v.errors, 2))
            }
            button type="submit" name="_action" value="decide" { "Check admissibility" }
        }
    }
}

async fn admissibility_form(State(c): State<St>, Extension(session): Extension<Session>, Query(q): Query<PartnershipQuery>) -> Html<String> {
    let partnerships = admissibility_partnerships(&c);
    let chosen = q.partnership.filter(|p| partnerships.iter().any(|(id, _)| id == p)).or_else(|| partnerships.first().map(|(id, _)| id.clone())).unwrap_or_default();
    let schema = c.schema(&chosen, ADMISSIBILITY_KIND).map(|(_, s)| s);
    let state = FormState::default();
    let body = admissibility_body(AdmissibilityView { partnerships: &partnerships, chosen: &chosen, schema: schema.as_deref(), state: &state, summary: vec![], errors: Default::default(), result: None, csrf: &session.csrf });
    c.page("Stage 2 admissibility", Section::Admissibility, Some(&session), body)
}

/// What the form did not give, or gave as "No", by the facts' own labels.
fn missing_statements(schema: &KindSchema, facts: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in &schema.facts {
        match (&f.ty, facts.get(&f.name)) {
            (FactType::Bool, Some(Value::Bool(false))) => out.push(format!("{}: no. {}", f.label, f.help)),
            (FactType::List { .. }, Some(Value::Array(a))) if a.is_empty() => out.push(format!("{}: none given.", f.label)),
            (_, None) => out.push(format!("{}: not given. {}", f.label, f.help)),
            _ => {}
        }
    }
    out
}

async fn admissibility_submit(State(c): State<St>, Extension(session): Extension<Session>, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    if !csrf_ok(&session, field(&pairs, "_csrf")) {
        return expired(&c, &session);
    }
    let partnerships = admissibility_partnerships(&c);
    let chosen = field(&pairs, "_partnership").unwrap_or_default().to_string();
    let Some((name, schema)) = c.schema(&chosen, ADMISSIBILITY_KIND) else {
        let state = FormState::default();
        let fallback = partnerships.first().map(|(id, _)| id.clone()).unwrap_or_default();
        let schema = c.schema(&fallback, ADMISSIBILITY_KIND).map(|(_, s)| s);
        let errors = std::collections::BTreeMap::from([("_partnership".to_string(), vec!["Choose a partnership from the list.".to_string()])]);
        let body = admissibility_body(AdmissibilityView {
            partnerships: &partnerships,
            chosen: &fallback,
            schema: schema.as_deref(),
            state: &state,
            summary: vec![(Some("f-_partnership".into()), "Choose a partnership from the list.".into())],
            errors,
            result: None,
            csrf: &session.csrf,
        });
        return (StatusCode::UNPROCESSABLE_ENTITY, c.page("Error: Stage 2 admissibility", Section::Admissibility, Some(&session), body)).into_response();
    };
    let mut state = FormState::from_pairs(&schema, &pairs);
    let action = field(&pairs, "_action").unwrap_or("decide");
    let adding = action.strip_prefix("add:");
    if let Some(list) = adding {
        forms::add_row(&mut state, list, 2);
    }
    let mut view = AdmissibilityView { partnerships: &partnerships, chosen: &chosen, schema: Some(&schema), state: &state, summary: vec![], errors: Default::default(), result: None, csrf: &session.csrf };
    if adding.is_some() {
        return c.page("Stage 2 admissibility", Section::Admissibility, Some(&session), admissibility_body(view)).into_response();
    }
    let (facts, problems) = state.facts(&schema);
    match c.decide(&chosen, ADMISSIBILITY_KIND, facts.clone(), problems).await {
        Ok(d) => {
            let code_label = |list: &str, code: &str| {
                c.decider.store().get(&chosen).and_then(|l| l.set.vocabulary().codes(list).and_then(|cl| cl.values.iter().find(|v| v.code == code).map(|v| v.label.clone()))).unwrap_or_else(|| pages::humanize(code))
            };
            let given = facts.get("grounds").and_then(Value::as_array).cloned().unwrap_or_default();
            let grounds: Vec<pages::GroundLine> = d
                .ground_routes
                .iter()
                .map(|g| {
                    let i = g.index as usize;
                    let words = given.get(i).and_then(|x| x.get("description")).and_then(Value::as_str).unwrap_or_default().to_string();
                    pages::GroundLine { number: i + 1, words, category: code_label("ground_category", &g.category), route: pages::route_words(&g.route) }
                })
                .collect();
            let complainant = facts.get("complainant").and_then(Value::as_str).map_or_else(|| "Not given".to_string(), |code| code_label("complainant", code));
            let missing = missing_statements(&schema, &facts);
            view.result = Some(pages::admissibility_result(&name, &complainant, &grounds, &missing, &d));
            c.page("Stage 2 admissibility: result", Section::Admissibility, Some(&session), admissibility_body(view)).into_response()
        }
        Err(e) => {
            let (summary, errors) = form_errors(&schema, &state, &e);
            view.summary = summary;
            view.errors = errors;
            let status = if e.violations.is_empty() { e.http_status() } else { StatusCode::UNPROCESSABLE_ENTITY };
            (status, c.page("Error: Stage 2 admissibility", Section::Admissibility, Some(&session), admissibility_body(view))).into_response()
        }
    }
}

async fn compare_page(State(c): State<St>, Extension(session): Extension<Session>) -> Response {
    let store = Arc::clone(c.decider.store());
    let result = tokio::task::spawn_blocking(move || register::scenarios(&store).map(|s| register::matrix(&store, &s))).await;
    match result {
        Ok(Ok(m)) => c.page("Compare partnerships", Section::Compare, Some(&session), pages::compare(&m)).into_response(),
        Ok(Err(e)) => c.status_page(StatusCode::INTERNAL_SERVER_ERROR, "The scenarios could not be read", &e, Some(&session)),
        Err(_) => c.status_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "The comparison could not be made.", Some(&session)),
    }
}

async fn assumptions_page(State(c): State<St>, Extension(session): Extension<Session>) -> Response {
    let store = Arc::clone(c.decider.store());
    let result = tokio::task::spawn_blocking(move || {
        let scenarios = register::scenarios(&store).unwrap_or_default();
        register::assumptions(&store, &scenarios)
    })
    .await;
    match result {
        Ok(r) => c.page("Assumptions", Section::Assumptions, Some(&session), pages::assumptions(&r)).into_response(),
        Err(_) => c.status_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "The register could not be made.", Some(&session)),
    }
}

#[derive(serde::Deserialize)]
struct IdQuery {
    id: Option<String>,
}

async fn lookup_page(State(c): State<St>, Extension(session): Extension<Session>, Query(q): Query<IdQuery>) -> Html<String> {
    let id = q.id.unwrap_or_default();
    let id = id.trim();
    let (message, found) = if id.is_empty() {
        (c.lookup.find("").err().map(|e| format!("{}.", capitalise(&e.to_string()))), None)
    } else {
        match c.lookup.find(id) {
            Ok(Some(r)) => (None, Some(r.decision)),
            Ok(None) => (Some("No decision with that id is in the record. Check the id and try again.".to_string()), None),
            Err(e) => (Some(format!("{}.", capitalise(&e.to_string()))), None),
        }
    };
    c.page("Look up a decision", Section::Lookup, Some(&session), pages::lookup(id, message.as_deref(), found.as_ref(), &session.csrf))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

async fn replay(State(c): State<St>, Extension(session): Extension<Session>, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    if !csrf_ok(&session, field(&pairs, "_csrf")) {
        return expired(&c, &session);
    }
    let id = field(&pairs, "id").unwrap_or_default();
    let recorded = match c.lookup.find(id) {
        Ok(Some(r)) => r,
        Ok(None) => return c.status_page(StatusCode::NOT_FOUND, "Decision not found", "No decision with that id is in the record.", Some(&session)),
        Err(e) => return c.status_page(StatusCode::SERVICE_UNAVAILABLE, "Replay is not available", &format!("{}.", capitalise(&e.to_string())), Some(&session)),
    };
    let d = recorded.decision;
    match c.decide(&d.partnership, &d.kind, recorded.facts, Vec::new()).await {
        Ok(now) => {
            let same = now.outcome == d.outcome && now.reasons == d.reasons && now.actions == d.actions;
            let body = maud::html! {
                h1 { "Replay of decision " code { (d.decision_id) } }
                p class="lead" { @if same { "Today's rules make the same decision." } @else { "Today's rules decide differently. The original is first, then today's." } }
                (pages::decision(&d, true, "The original decision"))
                (pages::decision(&now, true, "The decision today"))
            };
            c.page("Replay", Section::Lookup, Some(&session), body).into_response()
        }
        Err(e) => c.status_page(e.http_status(), "The replay was refused", &pages::refusal_text(&e), Some(&session)),
    }
}

async fn login_page(State(c): State<St>, Extension(session): Extension<Session>) -> Response {
    if !c.security.login_required {
        return Redirect::to("/").into_response();
    }
    c.page("Sign in", Section::None, Some(&session), pages::login(None, &session.csrf)).into_response()
}

async fn login_submit(State(c): State<St>, Extension(session): Extension<Session>, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    if !csrf_ok(&session, field(&pairs, "_csrf")) {
        return expired(&c, &session);
    }
    if c.security.token_signs_in(field(&pairs, "token").unwrap_or_default()) {
        c.security.sessions.remove(&session.id);
        let fresh = c.security.sessions.create(true);
        tracing::info!("console: signed in");
        let mut r = Redirect::to("/").into_response();
        r.headers_mut().append(header::SET_COOKIE, c.security.cookie(&fresh));
        return r;
    }
    tracing::info!("console: sign-in refused (wrong token)");
    (StatusCode::UNAUTHORIZED, c.page("Error: Sign in", Section::None, Some(&session), pages::login(Some("That token is not right. Check it and try again."), &session.csrf))).into_response()
}

async fn logout(State(c): State<St>, Extension(session): Extension<Session>, Form(pairs): Form<Vec<(String, String)>>) -> Response {
    if !csrf_ok(&session, field(&pairs, "_csrf")) {
        return expired(&c, &session);
    }
    c.security.sessions.remove(&session.id);
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().append(header::SET_COOKIE, c.security.clear_cookie());
    r
}

async fn not_found(State(c): State<St>, Extension(session): Extension<Session>) -> Response {
    c.status_page(StatusCode::NOT_FOUND, "Page not found", "There is no page at this address. Check it, or start from the partnerships.", Some(&session))
}

// ------------------------------------------------------------------------------------------
// JSON API
// ------------------------------------------------------------------------------------------

async fn api_partnerships(State(c): State<St>) -> Response {
    let partnerships = json::partnerships(c.decider.store()).into_iter().map(Into::into).collect();
    axum::Json(json::PartnershipList { partnerships }).into_response()
}

async fn api_openapi(State(c): State<St>) -> Response {
    let mut r = axum::Json(openapi::document(c.decider.store())).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn api_decide(State(c): State<St>, Path((partnership, kind)): Path<(String, String)>, body: Bytes) -> Response {
    let facts: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return ApiError::invalid(&[FieldViolation::new("facts", "must be a JSON object of named facts")]).into_response(),
        Err(e) => {
            return ApiError::invalid(&[FieldViolation::new("facts", format!("is not valid JSON (line {}, column {})", e.line(), e.column()))]).into_response();
        }
    };
    match c.decide(&partnership, &kind, facts, Vec::new()).await {
        Ok(d) => axum::Json(d).into_response(),
        Err(e) => e.into_response(),
    }
}
