//! The doubles' HTTP servers: each on a free port of 127.0.0.1, on the test's runtime. Its own
//! file so that benchmarks can include it beside a double.

/// A double's HTTP server on a free port of 127.0.0.1, on the test's runtime; stopped when
/// dropped.
pub struct LoopbackServer {
    pub address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackServer {
    pub async fn start(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { address, task }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
