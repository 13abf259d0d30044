//! The dashboard's socket: a bounded number of connections, each closed
//! when it goes quiet.
//!
//! 1,100 idle unauthenticated connections to a dashboard on `0.0.0.0` once
//! used up the process's file descriptors: no run could persist its state
//! and the operator was locked out. A connection now needs a permit (at
//! most [`Limits::connections`] at once; beyond that, new ones wait in the
//! kernel's backlog, costing baton nothing), must send its first bytes
//! within [`Limits::first_byte`], and is closed after [`Limits::idle`]
//! with no traffic either way. The live page's event stream writes every
//! second, so it never counts as idle.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How many connections, and how long they may sit silent.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connections: usize,
    pub first_byte: Duration,
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 64,
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// A [`TcpListener`] that hands out [`Guarded`] connections.
pub struct Bounded {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: Limits,
}

impl Bounded {
    pub fn new(listener: TcpListener, limits: Limits) -> Bounded {
        Bounded {
            listener,
            permits: Arc::new(Semaphore::new(limits.connections.max(1))),
            limits,
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Guarded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Guarded, std::net::SocketAddr) {
        // The permit first: a connection beyond the cap stays in the
        // backlog rather than becoming one more open file here.
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.listener.accept().await {
                Ok((io, addr)) => {
                    let _ = io.set_nodelay(true);
                    return (
                        Guarded {
                            io,
                            _permit: permit,
                            deadline: Box::pin(tokio::time::sleep(self.limits.first_byte)),
                            idle: self.limits.idle,
                        },
                        addr,
                    );
                }
                // Out of descriptors and the like: back off briefly rather
                // than spin; the permit waits with us.
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails its reads once it has been silent too long.
pub struct Guarded {
    io: TcpStream,
    /// Frees a connection slot when the connection is dropped.
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
}

impl Guarded {
    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was silent too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
