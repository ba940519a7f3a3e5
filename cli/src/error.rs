//! What a command can fail with, as the shell sees it: an exit code by kind of failure and a
//! line `runnel: <code>: <message>` on stderr. `<code>` is the server's protocol error code
//! when the server refused (`UnknownStream`, `StreamExists`, `UnknownSubscription`, …),
//! otherwise a name of the local failure (`Usage`, `Connection`, `Tls`, `Timeout`, …).

use std::fmt;

use runnel_client::{ClientError, ErrorCode};

/// The process's exit status, by kind of failure (documented in `docs/cli.md` and `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: success.
    Success = 0,
    /// 1: the server refused the request.
    Refused = 1,
    /// 2: bad arguments or flags.
    Usage = 2,
    /// 3: the node could not be reached or trusted, or stopped answering.
    Connection = 3,
    /// 4: an unknown stream, shard or subscription.
    NotFound = 4,
    /// 5: anything else.
    Other = 5,
}

impl ExitCode {
    /// The number the process exits with.
    pub fn number(self) -> i32 {
        self as i32
    }
}

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// How the process exits.
    pub exit: ExitCode,
    /// A short name of what failed (the server's error code when it refused).
    pub code: String,
    /// What failed, for people.
    pub message: String,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            exit: ExitCode::Usage,
            code: "Usage".into(),
            message: message.into(),
        }
    }

    /// An unknown stream, shard or subscription found by the command itself (exit 4).
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> CliError {
        CliError {
            exit: ExitCode::NotFound,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A failure writing the output or reading the input (exit 5).
    pub fn io(context: &str, error: &std::io::Error) -> CliError {
        CliError {
            exit: ExitCode::Other,
            code: "Io".into(),
            message: format!("{context}: {error}"),
        }
    }

    /// A refusal found by the command itself, under the server's error code (exit 1).
    pub fn refused(code: &str, message: impl Into<String>) -> CliError {
        CliError {
            exit: ExitCode::Refused,
            code: code.into(),
            message: message.into(),
        }
    }

    /// Any other failure (exit 5).
    pub fn other(code: &str, message: impl Into<String>) -> CliError {
        CliError {
            exit: ExitCode::Other,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runnel: {}: {}", self.code, self.message)
    }
}

impl std::error::Error for CliError {}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        let (exit, code) = classify(&error);
        let message = match &error {
            // The code is printed already; the request names what was being done.
            ClientError::Server {
                request, message, ..
            } => format!("{message} ({request})"),
            other => other.to_string(),
        };
        CliError {
            exit,
            code,
            message,
        }
    }
}

/// The exit code and the printed code of a client error.
fn classify(error: &ClientError) -> (ExitCode, String) {
    let local = |exit, code: &str| (exit, code.to_owned());
    match error {
        ClientError::Server { code, .. } => {
            let exit = match code {
                ErrorCode::UnknownStream
                | ErrorCode::UnknownShard
                | ErrorCode::UnknownSubscription
                | ErrorCode::UnknownNode => ExitCode::NotFound,
                _ => ExitCode::Refused,
            };
            (exit, code.to_string())
        }
        ClientError::InvalidUrl { .. } => local(ExitCode::Usage, "InvalidUrl"),
        ClientError::InvalidOptions { .. } => local(ExitCode::Usage, "InvalidOption"),
        ClientError::InvalidArgument { .. } => local(ExitCode::Usage, "InvalidArgument"),
        ClientError::Connect { .. } | ClientError::Connection { .. } => {
            local(ExitCode::Connection, "Connection")
        }
        ClientError::Tls { .. } => local(ExitCode::Connection, "Tls"),
        ClientError::Handshake { .. } => local(ExitCode::Connection, "Handshake"),
        ClientError::Timeout { .. } => local(ExitCode::Connection, "Timeout"),
        ClientError::Unreachable { .. } => local(ExitCode::Connection, "Unreachable"),
        ClientError::Io { .. } => local(ExitCode::Connection, "Io"),
        // The connection failed after the request was sent: a connection problem, whose
        // message says the outcome is unknown.
        ClientError::OutcomeUnknown { .. } => local(ExitCode::Connection, "OutcomeUnknown"),
        // Some records were stored: the first failure decides the kind.
        ClientError::PartialAppend { source, .. } => classify(source),
        // The server refused acks: those records were not acked and will be delivered again.
        ClientError::AckRefused { .. } => local(ExitCode::Refused, "AckRefused"),
        ClientError::AckQueueFull { .. } => local(ExitCode::Other, "AckQueueFull"),
        ClientError::Batch { .. } => local(ExitCode::Other, "Batch"),
        ClientError::Protocol { .. } => local(ExitCode::Other, "Protocol"),
        ClientError::UnexpectedResponse { .. } => local(ExitCode::Other, "UnexpectedResponse"),
        ClientError::NoRoute { .. } => local(ExitCode::Other, "NoRoute"),
        ClientError::UnknownCore { .. } => local(ExitCode::Other, "UnknownCore"),
        // The metadata names a node the cluster does not list (or that answers as another).
        ClientError::UnknownNode { .. } => local(ExitCode::Connection, "UnknownNode"),
        ClientError::Closed => local(ExitCode::Other, "Closed"),
        _ => local(ExitCode::Other, "Error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: ErrorCode) -> ClientError {
        ClientError::Server {
            request: "DescribeStream",
            code,
            message: "stream nope does not exist".into(),
            owner: None,
            retry_after_ms: None,
            start_offset: None,
            next_offset: None,
        }
    }

    /// Unknown streams, shards and subscriptions are "not found"; other refusals keep the
    /// server's code.
    #[test]
    fn server_refusals_map_to_1_or_4() {
        let error = CliError::from(server(ErrorCode::UnknownStream));
        assert_eq!(error.exit, ExitCode::NotFound);
        assert_eq!(
            error.to_string(),
            "runnel: UnknownStream: stream nope does not exist (DescribeStream)"
        );
        assert_eq!(
            CliError::from(server(ErrorCode::UnknownShard)).exit,
            ExitCode::NotFound
        );
        let missing = CliError::from(server(ErrorCode::UnknownSubscription));
        assert_eq!(missing.exit, ExitCode::NotFound);
        assert_eq!(missing.code, "UnknownSubscription");
        for code in [
            ErrorCode::SubscriptionExists,
            ErrorCode::SubscriptionInUse,
            ErrorCode::ConsumerNameInUse,
        ] {
            assert_eq!(
                CliError::from(server(code)).exit,
                ExitCode::Refused,
                "{code}"
            );
        }
        let exists = CliError::from(server(ErrorCode::StreamExists));
        assert_eq!(exists.exit, ExitCode::Refused);
        assert_eq!(exists.code, "StreamExists");
    }

    /// Local failures: bad input is a usage error, an unreachable node a connection error.
    #[test]
    fn local_failures_map_by_kind() {
        let url = ClientError::InvalidUrl {
            url: "x".into(),
            reason: "expected runnel://host:port".into(),
        };
        assert_eq!(CliError::from(url).exit, ExitCode::Usage);
        let timeout = ClientError::Timeout {
            request: "connect",
            timeout_ms: 5,
        };
        assert_eq!(CliError::from(timeout.clone()).exit, ExitCode::Connection);
        let unknown = ClientError::OutcomeUnknown {
            request: "Append",
            source: Box::new(timeout),
        };
        let unknown = CliError::from(unknown);
        assert_eq!(unknown.exit, ExitCode::Connection);
        assert!(unknown.message.contains("outcome unknown"), "{unknown}");
        let tls = ClientError::Tls {
            reason: "bad certificate".into(),
        };
        assert_eq!(CliError::from(tls).code, "Tls");
        let partial = ClientError::PartialAppend {
            ids: vec![None],
            source: Box::new(server(ErrorCode::UnknownStream)),
        };
        assert_eq!(CliError::from(partial).exit, ExitCode::NotFound);
        assert_eq!(CliError::from(ClientError::Closed).exit, ExitCode::Other);
        assert_eq!(ExitCode::Other.number(), 5);
        assert_eq!(ExitCode::Success.number(), 0);
    }
}
