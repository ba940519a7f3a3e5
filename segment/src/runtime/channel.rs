//! Channels: bounded queues between tasks of one executor ([`local`]), and the mesh of bounded
//! queues between every pair of executors of a node ([`Mesh`]), which carries the typed
//! messages of the core mesh.

use glommio::channels::channel_mesh::{self, Full, MeshBuilder};
use glommio::channels::local_channel;
use glommio::{GlommioError, ResourceType};

use super::RuntimeError;

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue is full; the message is handed back.
    #[error("the channel is full")]
    Full(T),
    /// The receiving side is gone (or the destination does not exist); the message is dropped.
    #[error("the channel is closed")]
    Closed,
}

impl<T> From<GlommioError<T>> for SendError<T> {
    fn from(error: GlommioError<T>) -> SendError<T> {
        match error {
            GlommioError::WouldBlock(ResourceType::Channel(message)) => SendError::Full(message),
            _ => SendError::Closed,
        }
    }
}

/// A bounded queue between tasks of the current executor, holding up to `capacity` messages.
pub fn local<T>(capacity: usize) -> (LocalSender<T>, LocalReceiver<T>) {
    let (sender, receiver) = local_channel::new_bounded(capacity);
    (LocalSender(sender), LocalReceiver(receiver))
}

/// The sending side of a [`local`] channel.
pub struct LocalSender<T>(local_channel::LocalSender<T>);

impl<T> LocalSender<T> {
    /// Queues `message` if there is room.
    pub fn try_send(&self, message: T) -> Result<(), SendError<T>> {
        self.0.try_send(message).map_err(SendError::from)
    }

    /// Queues `message`, waiting for room.
    pub async fn send(&self, message: T) -> Result<(), SendError<T>> {
        self.0.send(message).await.map_err(SendError::from)
    }
}

/// The receiving side of a [`local`] channel.
pub struct LocalReceiver<T>(local_channel::LocalReceiver<T>);

impl<T> LocalReceiver<T> {
    /// The next message; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&self) -> Option<T> {
        self.0.recv().await
    }
}

/// The full mesh of a node's executors: a bounded queue from each to each other. Built once,
/// cloned into every executor, which then [`Mesh::join`]s it.
pub struct Mesh<T: Send + 'static>(MeshBuilder<T, Full>);

impl<T: Send + 'static> Mesh<T> {
    /// A mesh of `executors` executors whose queues hold `capacity` messages each.
    pub fn full(executors: usize, capacity: usize) -> Mesh<T> {
        Mesh(MeshBuilder::full(executors, capacity))
    }

    /// Joins the mesh from the current executor; waits until every executor joined. Returns
    /// this executor's senders and one receiver per other executor.
    pub async fn join(self) -> Result<(MeshSenders<T>, Vec<MeshReceiver<T>>), RuntimeError> {
        let (senders, mut receivers) = self.0.join().await.map_err(|error| RuntimeError::Mesh {
            reason: error.to_string(),
        })?;
        let receivers = receivers
            .streams()
            .into_iter()
            .map(|(from, receiver)| MeshReceiver { from, receiver })
            .collect();
        Ok((MeshSenders(senders), receivers))
    }
}

impl<T: Send + 'static> Clone for Mesh<T> {
    fn clone(&self) -> Mesh<T> {
        Mesh(self.0.clone())
    }
}

/// One executor's senders to every other executor of the mesh.
pub struct MeshSenders<T: Send>(channel_mesh::Senders<T>);

impl<T: Send> MeshSenders<T> {
    /// Queues `message` for executor `to` if its queue has room.
    pub fn try_send_to(&self, to: usize, message: T) -> Result<(), SendError<T>> {
        self.0.try_send_to(to, message).map_err(SendError::from)
    }

    /// Queues `message` for executor `to`, waiting for room.
    pub async fn send_to(&self, to: usize, message: T) -> Result<(), SendError<T>> {
        self.0.send_to(to, message).await.map_err(SendError::from)
    }
}

/// Messages from one other executor of the mesh.
pub struct MeshReceiver<T: Send> {
    from: usize,
    receiver: glommio::channels::shared_channel::ConnectedReceiver<T>,
}

impl<T: Send> MeshReceiver<T> {
    /// The executor the messages come from.
    pub fn from(&self) -> usize {
        self.from
    }

    /// The next message; `None` once the sending executor is gone.
    pub async fn recv(&self) -> Option<T> {
        self.receiver.recv().await
    }
}
