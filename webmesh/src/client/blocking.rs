//! A client for code that is not async: it owns a runtime thread, as the Python client does.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use webmesh_codec::Framing;

use super::{Client, ClientBuilder, SubscribeOptions, Subscription};
use crate::error::{CallError, Result};
use crate::route::Route;
use crate::topics::{Event, Topic};

/// A [`Client`] for plain blocking code: the Python `WebMeshClient` shape (`emit`, `call`,
/// `call_async`, `close`), without its bugs: replies are matched to calls by id (v1), a call that
/// gets no reply fails at its timeout instead of hanging, and calls from many threads run
/// concurrently.
///
/// Its methods block the calling thread; do not call them from async code (use [`Client`]).
///
/// # Examples
///
/// ```no_run
/// let client = webmesh::BlockingClient::connect("ws://127.0.0.1:4269")?;
/// let echoed: String = client.call_path("/echo", &"hello")?;
/// client.emit_path("/log", &"fire and forget")?;
/// let pending = client.call_path_async("/echo", "later", |r: Result<String, webmesh::Error>| {
///     println!("callback got {r:?}");
/// });
/// pending.wait();
/// client.close();
/// # Ok::<(), webmesh::Error>(())
/// ```
pub struct BlockingClient {
    client: Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingClient")
            .field("client", &self.client)
            .finish()
    }
}

/// A call started by `call_async`: its callback runs on the client's thread when the answer
/// arrives. Dropping the handle does not cancel the call.
#[derive(Debug)]
pub struct CallHandle {
    done: std::sync::mpsc::Receiver<()>,
}

impl CallHandle {
    /// Blocks until the callback has run.
    pub fn wait(self) {
        let _ = self.done.recv();
    }

    /// Blocks until the callback has run or `timeout` passes; true if it ran.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.done.recv_timeout(timeout).is_ok()
    }
}

impl BlockingClient {
    /// Connects to `url` with every default; see [`ClientBuilder::connect`].
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`].
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with(ClientBuilder::default(), url)
    }

    pub(super) fn connect_with(builder: ClientBuilder, url: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("webmesh-client")
            .enable_all()
            .build()?;
        let client = runtime.block_on(builder.connect(url))?;
        Ok(BlockingClient {
            client,
            runtime: Arc::new(runtime),
        })
    }

    /// The async client underneath (for use from async code on another runtime).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The framing agreed with the server.
    pub fn framing(&self) -> Framing {
        self.client.framing()
    }

    /// Calls route `R` and blocks until its reply; see [`Client::call`].
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn call<R: Route>(&self, request: R::Request) -> Result<R::Response, CallError<R::Error>> {
        self.runtime.block_on(self.client.call::<R>(request))
    }

    /// [`call`](Self::call) with its own timeout.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn call_timeout<R: Route>(
        &self,
        request: R::Request,
        timeout: Option<Duration>,
    ) -> Result<R::Response, CallError<R::Error>> {
        self.runtime
            .block_on(self.client.call_timeout::<R>(request, timeout))
    }

    /// Sends to route `R` without waiting for a reply.
    ///
    /// # Errors
    ///
    /// As [`Client::emit`].
    pub fn emit<R: Route>(&self, request: R::Request) -> Result<()> {
        self.runtime.block_on(self.client.emit::<R>(request))
    }

    /// Subscribes to topic `T`; see [`Client::subscribe`]. The subscription is an
    /// [`Iterator`] of events that blocks for the next one; dropping it unsubscribes.
    ///
    /// ```no_run
    /// #[derive(Debug, serde::Serialize, serde::Deserialize)]
    /// #[webmesh::topic("/orders/created")]
    /// pub struct OrderCreated { pub id: u64 }
    ///
    /// let client = webmesh::BlockingClient::connect("ws://127.0.0.1:4269")?;
    /// for event in client.subscribe::<OrderCreated>()? {
    ///     println!("{event:?}");
    /// }
    /// # Ok::<(), webmesh::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe`].
    pub fn subscribe<T: Topic>(&self) -> Result<BlockingSubscription<T>> {
        self.subscribe_with(SubscribeOptions::default())
    }

    /// Subscribes with options; see [`Client::subscribe_with`].
    ///
    /// # Errors
    ///
    /// As [`Client::subscribe_with`].
    pub fn subscribe_with<T: Topic>(&self, options: SubscribeOptions) -> Result<BlockingSubscription<T>> {
        let inner = self.runtime.block_on(self.client.subscribe_with::<T>(options))?;
        Ok(BlockingSubscription {
            inner,
            runtime: self.runtime.clone(),
        })
    }

    /// Publishes `message` through the server; see [`Client::publish`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish`].
    pub fn publish<T: Topic>(&self, message: &T) -> Result<usize> {
        self.runtime.block_on(self.client.publish(message))
    }

    /// Publishes `message` at a concrete path of its pattern; see [`Client::publish_at`].
    ///
    /// # Errors
    ///
    /// As [`Client::publish_at`].
    pub fn publish_at<T: Topic>(&self, path: &str, message: &T) -> Result<usize> {
        self.runtime.block_on(self.client.publish_at(path, message))
    }

    /// Calls route `R` and returns at once; `callback` gets the outcome on the client's thread.
    pub fn call_async<R: Route>(
        &self,
        request: R::Request,
        callback: impl FnOnce(Result<R::Response, CallError<R::Error>>) + Send + 'static,
    ) -> CallHandle {
        let client = self.client.clone();
        self.spawn(async move { callback(client.call::<R>(request).await) })
    }

    /// The Python `call(target, data)`: untyped path, typed answer.
    ///
    /// # Errors
    ///
    /// As [`Client::call_path`].
    pub fn call_path<Resp: DeserializeOwned>(
        &self,
        path: &str,
        request: &(impl Serialize + ?Sized),
    ) -> Result<Resp> {
        self.runtime.block_on(self.client.call_path(path, request))
    }

    /// The Python `emit(target, data)`.
    ///
    /// # Errors
    ///
    /// As [`Client::emit_path`].
    pub fn emit_path(&self, path: &str, request: &(impl Serialize + ?Sized)) -> Result<()> {
        self.runtime.block_on(self.client.emit_path(path, request))
    }

    /// The Python `call_async(target, data, callback)`: returns at once; `callback` gets the
    /// outcome on the client's thread.
    pub fn call_path_async<Resp, F>(
        &self,
        path: &str,
        request: impl Serialize + Send + 'static,
        callback: F,
    ) -> CallHandle
    where
        Resp: DeserializeOwned + Send + 'static,
        F: FnOnce(Result<Resp>) + Send + 'static,
    {
        let client = self.client.clone();
        let path = path.to_owned();
        self.spawn(async move { callback(client.call_path(&path, &request).await) })
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) -> CallHandle {
        let (done_tx, done) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            fut.await;
            let _ = done_tx.send(());
        });
        CallHandle { done }
    }

    /// Closes the connection (the Python `close()`).
    pub fn close(self) {
        self.runtime.block_on(self.client.close());
    }
}

/// A subscription of a [`BlockingClient`]: an [`Iterator`] of [`Event`]s that blocks for the
/// next one, and ends after [`Event::Closed`]. Dropping it unsubscribes.
pub struct BlockingSubscription<T> {
    inner: Subscription<T>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl<T> fmt::Debug for BlockingSubscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BlockingSubscription").field(&self.inner).finish()
    }
}

impl<T: Topic> BlockingSubscription<T> {
    /// The next event, waiting at most `timeout`; `None` when none came in time or the
    /// subscription ended.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Event<T>> {
        use futures_util::StreamExt;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.next()).await })
            .ok()
            .flatten()
    }

    /// The path or pattern subscribed to.
    pub fn path(&self) -> &str {
        self.inner.path()
    }
}

impl<T: Topic> Iterator for BlockingSubscription<T> {
    type Item = Event<T>;

    fn next(&mut self) -> Option<Event<T>> {
        use futures_util::StreamExt;
        self.runtime.block_on(self.inner.next())
    }
}
