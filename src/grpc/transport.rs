//! Connections: TLS settings, the plaintext policy, and per-connection state.
//!
//! Every accepted TCP connection is wrapped in a [`ConnIo`] that carries its
//! [`ConnState`] (rate bucket, in-progress count, connection slot), so
//! that tonic hands that state to each call on the connection as a request extension
//! ([`ConnInfo`]), and the slot is given back when the connection closes. When the server
//! already has as many connections as it takes, a new one is closed at once.
//!
//! TLS is rustls (through tonic): the server's certificate chain and key from PEM files, and
//! with a client CA, mutual TLS — client certificates are verified against that CA, and are
//! required unless [`TlsSettings::client_cert_optional`] is set. Without TLS the server only
//! listens on a loopback address unless plaintext is explicitly allowed
//! ([`check_plaintext`]).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::ServeError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::limits::ConnState;
use super::metrics::Metrics;

/// What each call learns about its connection (a request extension; with TLS, also inside
/// `TlsConnectInfo<ConnInfo>` with the peer's certificates).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The connection's state and limits.
    pub state: Arc<ConnState>,
}

/// An accepted TCP connection with its [`ConnState`], counted in the open-connections gauge
/// until it closes.
#[derive(Debug)]
pub struct ConnIo {
    stream: TcpStream,
    state: Arc<ConnState>,
    metrics: Arc<Metrics>,
}

impl ConnIo {
    /// Wraps `stream` with its connection state; the caller has counted it open in `metrics`.
    pub fn new(stream: TcpStream, state: Arc<ConnState>, metrics: Arc<Metrics>) -> Self {
        ConnIo { stream, state, metrics }
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}

impl Connected for ConnIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo { state: Arc::clone(&self.state) }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The server's TLS material, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_pem: Vec<u8>,
    /// The server's private key (PEM).
    pub key_pem: Vec<u8>,
    /// CA certificates (PEM) that client certificates are verified against: mutual TLS.
    pub client_ca_pem: Option<Vec<u8>>,
    /// With a client CA: accept clients without a certificate too (they then need a token for
    /// anything but open methods). Without this, a client certificate is required.
    pub client_cert_optional: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"[redacted]")
            .field("client_ca_pem", &self.client_ca_pem.as_ref().map(|c| format!("{} bytes", c.len())))
            .field("client_cert_optional", &self.client_cert_optional)
            .finish()
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, ServeError> {
    let bytes = std::fs::read(path).map_err(|source| ServeError::ReadFile { what: what.to_owned(), path: path.to_owned(), source })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ServeError::Refused(format!("the {what} file {} is not PEM (no `-----BEGIN` line)", path.display())));
    }
    Ok(bytes)
}

impl TlsSettings {
    /// Reads the PEM files: the server's certificate chain and key, and optionally a client CA.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>, client_cert_optional: bool) -> Result<TlsSettings, ServeError> {
        Ok(TlsSettings {
            cert_pem: read_pem(cert, "TLS certificate (--tls-cert)")?,
            key_pem: read_pem(key, "TLS private key (--tls-key)")?,
            client_ca_pem: client_ca.map(|p| read_pem(p, "client CA (--tls-client-ca)")).transpose()?,
            client_cert_optional,
        })
    }

    /// Whether clients present certificates (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// tonic's server TLS configuration.
    pub fn server_config(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(std::time::Duration::from_secs(5));
        if let Some(ca) = &self.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca)).client_auth_optional(self.client_cert_optional);
        }
        config
    }
}

/// Refuses to serve plaintext gRPC on a non-loopback address unless `allow_plaintext`.
pub fn check_plaintext(addr: SocketAddr, tls: bool, allow_plaintext: bool) -> Result<(), ServeError> {
    if tls || allow_plaintext || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(ServeError::Refused(format!(
        "refusing to serve plaintext gRPC on {addr}, which is not a loopback address: decisions concern children and \
         credentials would cross the network in clear. Give --tls-cert and --tls-key (PEM files) to serve TLS, or \
         --allow-plaintext if a TLS-terminating proxy or service mesh sits in front"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback_unless_allowed() {
        let lo: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let lo6: SocketAddr = "[::1]:50051".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert!(check_plaintext(lo, false, false).is_ok());
        assert!(check_plaintext(lo6, false, false).is_ok());
        let err = check_plaintext(any, false, false).unwrap_err().to_string();
        assert!(err.contains("--tls-cert") && err.contains("--allow-plaintext"), "{err}");
        assert!(check_plaintext(any, true, false).is_ok());
        assert!(check_plaintext(any, false, true).is_ok());
    }

    #[test]
    fn key_material_is_not_shown() {
        let t = TlsSettings { cert_pem: b"cert".to_vec(), key_pem: b"SECRET-KEY".to_vec(), client_ca_pem: None, client_cert_optional: false };
        assert!(!format!("{t:?}").contains("SECRET"));
    }
}
