//! The D-Bus API of the Mender client (`docs/managed-mode.md`, "Update
//! control maps and the D-Bus API"), on the system bus, for device
//! applications and add-ons written for Mender. Part of the daemon: only
//! the daemon starts it, and it wakes the daemon's wait. It serves:
//!
//! * `io.mender.UpdateManager`, object `/io/mender/UpdateManager`,
//!   interface `io.mender.Update1`: `SetUpdateControlMap(s map_json) → (i
//!   refresh_timeout)` does what `mender-rs control set` does (same
//!   validation, same insert-or-remove rule, same answer: half the maps'
//!   lifetime in seconds), then wakes the daemon so that a paused
//!   deployment looks at the maps at once. A refused map changes nothing;
//!   the error is `io.mender.Failed`, as Mender's, but its message names
//!   the field (`states.ArtifactReboot_Enter.action: unknown action ...`)
//!   where Mender only says to look at its log.
//! * `io.mender.AuthenticationManager`, object
//!   `/io/mender/AuthenticationManager`, interface
//!   `io.mender.Authentication1`: `GetJwtToken() → (s token, s
//!   server_url)` (empty strings without a token), `FetchJwtToken() → (b
//!   success)` (true once the request is queued; the daemon authenticates
//!   when it is idle or paused) and the signal `JwtTokenStateChange(s
//!   token, s server_url)`, sent after every successful authentication,
//!   when the token is lost, and once (empty strings) when an
//!   authentication `FetchJwtToken` asked for fails. As with Mender 3.x to 5.x,
//!   `server_url` is not the server's but the add-on forwarder's,
//!   `http://127.0.0.1:<port>` ([`forwarder`](super::forwarder)), which
//!   passes requests on to the server that issued the token with the
//!   daemon's TLS settings.
//! * `org.freedesktop.DBus.Introspectable` on both objects and their parent
//!   paths, `org.freedesktop.DBus.Peer` (libdbus's default answers).
//!
//! One thread (started by the daemon when `DBus.Enabled`, the default)
//! owns a private connection to the system bus (`DBUS_SYSTEM_BUS_ADDRESS`
//! when set, else the standard socket) and both names; it sleeps in `poll`
//! on the connection and on the [`TokenCell`]'s pipe. The token comes from
//! the daemon's [`ServerClient`] through that cell. It also polls the
//! forwarder's listener until the first add-on connects, which starts the
//! forwarder's own thread. When the bus is not
//! there (yet), or goes away, the thread connects again later (5 s, then
//! doubling up to 5 min); the daemon goes on without it meanwhile. A
//! missing bus (many devices, containers) is said once at info level; a
//! bus that refuses the connection or the names is an error.
//!
//! Who may call: the policy files `support/dbus/*.conf` (root only).

use std::ffi::CString;
use std::time::Duration;

use dbus::channel::{BusType, Channel};
use dbus::message::{Message, MessageType};

use super::forwarder::Forwarder;
use super::signals;
use crate::config::Config;
use crate::control_map::{self, BootTime, ControlMap, DeviceChange};
use crate::server::ServerClient;
use crate::server::token::TokenCell;

pub const UPDATE_NAME: &str = "io.mender.UpdateManager";
pub const UPDATE_PATH: &str = "/io/mender/UpdateManager";
pub const UPDATE_INTERFACE: &str = "io.mender.Update1";
pub const AUTH_NAME: &str = "io.mender.AuthenticationManager";
pub const AUTH_PATH: &str = "/io/mender/AuthenticationManager";
pub const AUTH_INTERFACE: &str = "io.mender.Authentication1";
/// The error name of a refused call (Mender's).
pub const FAILED: &str = "io.mender.Failed";
const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";

/// First and longest wait before connecting to the bus again.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Longest wait for the bus daemon's answer to `RequestName`.
const BUS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `RequestName` flags: take the name from an owner that allows it
/// (Mender does), never wait in the queue for it.
const REPLACE_EXISTING: u32 = 0x2;
const DO_NOT_QUEUE: u32 = 0x4;

const DOCTYPE: &str = "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n";

const STANDARD_INTERFACES: &str = r#"  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
"#;

const UPDATE_INTROSPECTION: &str = r#"  <interface name="io.mender.Update1">
    <method name="SetUpdateControlMap">
      <arg name="update_control_map" type="s" direction="in"/>
      <arg name="refresh_timeout" type="i" direction="out"/>
    </method>
  </interface>
"#;

const AUTH_INTROSPECTION: &str = r#"  <interface name="io.mender.Authentication1">
    <method name="GetJwtToken">
      <arg name="token" type="s" direction="out"/>
      <arg name="server_url" type="s" direction="out"/>
    </method>
    <method name="FetchJwtToken">
      <arg name="success" type="b" direction="out"/>
    </method>
    <signal name="JwtTokenStateChange">
      <arg name="token" type="s"/>
      <arg name="server_url" type="s"/>
    </signal>
  </interface>
"#;

/// Starts the D-Bus thread when `DBus.Enabled`; returns the client, which
/// then publishes its token to the thread.
pub fn start(config: &Config, mut client: ServerClient) -> ServerClient {
    if !config.dbus_enabled {
        log::info!("D-Bus API disabled (DBus.Enabled is false)");
        return client;
    }
    let tokens = match TokenCell::new() {
        Ok(t) => t,
        Err(e) => {
            log::error!("D-Bus API not started: {e}");
            return client;
        }
    };
    client.share_token(tokens.clone());
    let config = config.clone();
    let spawned = std::thread::Builder::new()
        .name("dbus".into())
        .spawn(move || run(&config, &tokens));
    if let Err(e) = spawned {
        log::error!("D-Bus API not started: {e}");
    }
    client
}

/// The thread: connect, serve until the connection ends, connect again.
fn run(config: &Config, tokens: &TokenCell) {
    let mut forwarder = Forwarder::new(config, tokens.clone());
    let mut retry = RETRY_FIRST;
    // The kind of the last failure said at info/error level: each kind is
    // said once, then only at debug level until something changes.
    let mut said: Option<bool> = None;
    loop {
        match connect() {
            Ok(channel) => {
                retry = RETRY_FIRST;
                said = None;
                log::info!(
                    "D-Bus API on the system bus ({UPDATE_NAME}, {AUTH_NAME}; connection {})",
                    channel.unique_name().unwrap_or("?")
                );
                let e = serve(config, tokens, &channel, &mut forwarder);
                log::warn!("D-Bus API: {e}; connecting again in {} s", retry.as_secs());
                // Add-ons may hold the forwarder's URL: it serves them
                // while the bus is away.
                forwarder.start();
            }
            Err(e) => {
                let no_bus = matches!(e, ConnectError::NoBus(_));
                if said == Some(no_bus) {
                    log::debug!("D-Bus API: connecting to the system bus: {e}");
                } else {
                    match &e {
                        // Normal on devices and in containers without a
                        // bus: said once, the API comes up when one does.
                        ConnectError::NoBus(why) => log::info!(
                            "D-Bus API off: no system bus ({why}); connecting when one appears"
                        ),
                        ConnectError::Failed(_) => log::error!(
                            "D-Bus API: connecting to the system bus: {e}; trying again in the background"
                        ),
                    }
                    said = Some(no_bus);
                }
            }
        }
        std::thread::sleep(retry);
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Why [`connect`] failed.
#[derive(Debug)]
enum ConnectError {
    /// Nothing listens where the system bus would be (no socket, or a
    /// socket nobody serves): no bus on this system, or not yet.
    NoBus(String),
    /// A bus is there but refused us, or the address is wrong.
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoBus(s) | Self::Failed(s) => f.write_str(s),
        }
    }
}

impl ConnectError {
    /// Sorts libdbus's error: a missing socket (ENOENT) or one nobody
    /// listens on (ECONNREFUSED) means no bus; anything else is a failure.
    fn of(e: &dbus::Error, text: String) -> ConnectError {
        match e.name() {
            Some(
                "org.freedesktop.DBus.Error.FileNotFound" | "org.freedesktop.DBus.Error.NoServer",
            ) => Self::NoBus(text),
            _ => Self::Failed(text),
        }
    }
}

fn connect() -> Result<Channel, ConnectError> {
    let mut channel = match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Ok(address) if !address.is_empty() => {
            let mut c = Channel::open_private(&address)
                .map_err(|e| ConnectError::of(&e, format!("{address}: {e}")))?;
            c.register()
                .map_err(|e| ConnectError::Failed(format!("{address}: {e}")))?;
            c
        }
        _ => Channel::get_private(BusType::System)
            .map_err(|e| ConnectError::of(&e, e.to_string()))?,
    };
    channel.set_watch_enabled(true);
    let mut owned = 0;
    for name in [UPDATE_NAME, AUTH_NAME] {
        match request_name(&channel, name) {
            Ok(()) => owned += 1,
            Err(e) => log::error!("D-Bus API: {name}: {e}"),
        }
    }
    if owned == 0 {
        return Err(ConnectError::Failed(
            "neither bus name could be owned".into(),
        ));
    }
    Ok(channel)
}

fn request_name(channel: &Channel, name: &str) -> Result<(), String> {
    let call = Message::new_method_call(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "RequestName",
    )?
    .append2(name, REPLACE_EXISTING | DO_NOT_QUEUE);
    let reply = channel
        .send_with_reply_and_block(call, BUS_CALL_TIMEOUT)
        .map_err(|e| e.to_string())?;
    match reply.read1::<u32>().map_err(|e| e.to_string())? {
        // Primary owner, or already the owner.
        1 | 4 => Ok(()),
        3 => Err("owned by another process".into()),
        n => Err(format!("RequestName answered {n}")),
    }
}

/// Serves until the connection breaks; returns why.
fn serve(
    config: &Config,
    tokens: &TokenCell,
    channel: &Channel,
    forwarder: &mut Forwarder,
) -> String {
    // The token in force when the connection comes up is announced too.
    let mut seen = 0u64;
    loop {
        // Emptied before the cell is read: a change after the read leaves
        // a byte for the poll below.
        tokens.drain();
        if let Some(token) = tokens.announced_since(&mut seen) {
            let (jwt, url) = token.unwrap_or_default();
            log::debug!(
                "D-Bus: JwtTokenStateChange ({})",
                if jwt.is_empty() { "no token" } else { &url }
            );
            let url = addon_url(forwarder, &jwt, &url);
            match Message::new_signal(AUTH_PATH, AUTH_INTERFACE, "JwtTokenStateChange") {
                Ok(signal) => {
                    let _ = channel.send(signal.append2(jwt, url));
                }
                Err(e) => log::error!("D-Bus: {e}"),
            }
        }
        // Every read may take in more than one message (and libdbus keeps
        // what it read): the poll waits only once nothing is left.
        loop {
            if channel.read_write(Some(Duration::ZERO)).is_err() || !channel.is_connected() {
                return "the connection to the system bus broke".into();
            }
            let mut handled = false;
            while let Some(message) = channel.pop_message() {
                handled = true;
                if let Some(reply) = handle(config, tokens, forwarder, &message) {
                    let _ = channel.send(reply);
                }
            }
            if !handled {
                break;
            }
        }
        let mut events = libc::POLLIN;
        if channel.has_messages_to_send() {
            events |= libc::POLLOUT;
        }
        let mut fds = [
            libc::pollfd {
                fd: channel.watch().fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: tokens.watch_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            // -1 (skipped) once the forwarder's thread has the listener.
            libc::pollfd {
                fd: forwarder.waiting_fd().unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // EINTR (a signal to the daemon) just goes round the loop.
        let _ = crate::sys::poll(&mut fds, -1);
        if fds[2].revents != 0 {
            // The first add-on connects.
            forwarder.start();
        }
    }
}

/// The URL add-ons get with a token: the forwarder's; the server's own
/// (with an error in the log) if the forwarder cannot listen. Empty
/// without a token.
fn addon_url(forwarder: &mut Forwarder, jwt: &str, server_url: &str) -> String {
    if jwt.is_empty() {
        return String::new();
    }
    match forwarder.url() {
        Ok(url) => url,
        Err(e) => {
            log::error!(
                "add-on forwarder: cannot listen on 127.0.0.1: {e}; add-ons get the server's URL"
            );
            server_url.to_string()
        }
    }
}

fn error_reply(call: &Message, name: &str, text: &str) -> Message {
    let text = CString::new(text.replace('\0', "")).unwrap_or_default();
    call.error(&name.into(), &text)
}

/// The answer to one incoming message (None for signals and replies).
pub fn handle(
    config: &Config,
    tokens: &TokenCell,
    forwarder: &mut Forwarder,
    message: &Message,
) -> Option<Message> {
    if message.msg_type() != MessageType::MethodCall {
        if message.member().as_deref() == Some("NameLost") {
            let lost: Option<&str> = message.get1();
            log::warn!("D-Bus: lost the name {}", lost.unwrap_or("?"));
        }
        return None;
    }
    let path = message.path();
    let path = path.as_deref().unwrap_or("");
    let interface = message.interface();
    let interface = interface.as_deref();
    let member = message.member();
    let member = member.as_deref().unwrap_or("");
    // A call without an interface goes by its member name (D-Bus allows it).
    let on = |i: &str| interface.is_none_or(|x| x == i);
    let reply = match (path, member) {
        (UPDATE_PATH, "SetUpdateControlMap") if on(UPDATE_INTERFACE) => {
            match message.read1::<&str>() {
                Ok(json) => match set_update_control_map(config, json) {
                    Ok(timeout) => message.method_return().append1(timeout),
                    Err(e) => {
                        log::warn!("D-Bus: SetUpdateControlMap refused: {e}");
                        error_reply(message, FAILED, &e)
                    }
                },
                Err(e) => error_reply(
                    message,
                    "org.freedesktop.DBus.Error.InvalidArgs",
                    &format!("SetUpdateControlMap takes one string (the map as JSON): {e}"),
                ),
            }
        }
        (AUTH_PATH, "GetJwtToken") if on(AUTH_INTERFACE) => {
            let (jwt, url) = tokens.get().unwrap_or_default();
            let url = addon_url(forwarder, &jwt, &url);
            message.method_return().append2(jwt, url)
        }
        (AUTH_PATH, "FetchJwtToken") if on(AUTH_INTERFACE) => {
            log::debug!("D-Bus: FetchJwtToken");
            tokens.request_fetch();
            signals::wake();
            message.method_return().append1(true)
        }
        (p, "Introspect") if on(INTROSPECTABLE) && introspection(p).is_some() => message
            .method_return()
            .append1(introspection(p).unwrap_or_default()),
        _ => return dbus::channel::default_reply(message),
    };
    Some(reply)
}

/// [`control_map::set_device_map`], as `mender-rs control set`, then
/// wakes the daemon.
fn set_update_control_map(config: &Config, json: &str) -> Result<i32, String> {
    let map = ControlMap::parse(json.as_bytes()).map_err(|e| e.to_string())?;
    let (id, priority) = (map.id.clone(), map.priority);
    let outcome =
        control_map::set_device_map(config, map, BootTime::now()).map_err(|e| e.to_string())?;
    signals::wake();
    match outcome.change {
        DeviceChange::Inserted { .. } => {
            log::info!("update control map {id} (priority {priority}) set over D-Bus")
        }
        DeviceChange::Removed { existed } => log::info!(
            "update control map {id} (priority {priority}) {} over D-Bus: no state left after the defaults",
            if existed {
                "removed"
            } else {
                "not there to remove"
            }
        ),
    }
    Ok(outcome.refresh_timeout)
}

/// The introspection XML of our object paths and their parents.
fn introspection(path: &str) -> Option<String> {
    let body = match path {
        "/" => "  <node name=\"io\"/>\n".to_string(),
        "/io" => "  <node name=\"mender\"/>\n".to_string(),
        "/io/mender" => {
            "  <node name=\"UpdateManager\"/>\n  <node name=\"AuthenticationManager\"/>\n"
                .to_string()
        }
        UPDATE_PATH => format!("{STANDARD_INTERFACES}{UPDATE_INTROSPECTION}"),
        AUTH_PATH => format!("{STANDARD_INTERFACES}{AUTH_INTROSPECTION}"),
        _ => return None,
    };
    Some(format!("{DOCTYPE}<node>\n{body}</node>\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str, interface: &str, member: &str) -> Message {
        let mut m =
            Message::new_method_call("io.mender.UpdateManager", path, interface, member).unwrap();
        // As the bus would (replies refer to it).
        m.set_serial(7);
        m
    }

    fn error_name(m: &mut Message) -> Option<String> {
        m.as_result().err().and_then(|e| e.name().map(String::from))
    }

    fn config(dir: &std::path::Path) -> Config {
        let text = r#"{"UpdateControlMapExpirationTimeSeconds": 120}"#;
        Config::from_str("test.conf", text, false, dir).unwrap()
    }

    #[test]
    fn a_missing_bus_is_not_a_failure() {
        for (name, no_bus) in [
            ("org.freedesktop.DBus.Error.FileNotFound", true),
            ("org.freedesktop.DBus.Error.NoServer", true),
            ("org.freedesktop.DBus.Error.AccessDenied", false),
            ("org.freedesktop.DBus.Error.BadAddress", false),
        ] {
            let e = dbus::Error::new_custom(name, "text");
            let sorted = ConnectError::of(&e, "text".into());
            assert_eq!(matches!(sorted, ConnectError::NoBus(_)), no_bus, "{name}");
            assert_eq!(sorted.to_string(), "text");
        }
    }

    #[test]
    fn calls_are_dispatched_by_path_and_member() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let tokens = TokenCell::new().unwrap();
        let mut forwarder = Forwarder::new(&config, tokens.clone());
        // Tokens: the URL is the forwarder's, which listens on loopback.
        let reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call(AUTH_PATH, AUTH_INTERFACE, "GetJwtToken"),
        )
        .unwrap();
        assert_eq!(reply.get2::<&str, &str>(), (Some(""), Some("")));
        tokens.publish(Some(("jwt", "https://server")), true);
        let reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call(AUTH_PATH, AUTH_INTERFACE, "GetJwtToken"),
        )
        .unwrap();
        let (jwt, url) = reply.get2::<&str, &str>();
        assert_eq!(jwt, Some("jwt"));
        let url = url.unwrap();
        assert_eq!(Some(url.to_string()), forwarder.url().ok());
        let port = url.strip_prefix("http://127.0.0.1:").unwrap();
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        assert!(forwarder.waiting_fd().is_some());
        let reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call(AUTH_PATH, AUTH_INTERFACE, "FetchJwtToken"),
        )
        .unwrap();
        assert_eq!(reply.get1::<bool>(), Some(true));
        assert!(tokens.take_fetch_request());
        // Maps: a bad one names the field; a good one answers the timeout.
        let bad = call(UPDATE_PATH, UPDATE_INTERFACE, "SetUpdateControlMap").append1(
            r#"{"id":"01234567-89ab-4def-8123-456789abcdef","states":{"ArtifactInstall_Enter":{"action":"stop"}}}"#,
        );
        let mut reply = handle(&config, &tokens, &mut forwarder, &bad).unwrap();
        assert_eq!(reply.msg_type(), MessageType::Error);
        assert_eq!(error_name(&mut reply).as_deref(), Some(FAILED));
        let text: &str = reply.get1().unwrap();
        assert!(
            text.contains("states.ArtifactInstall_Enter.action"),
            "{text}"
        );
        let good = call(UPDATE_PATH, UPDATE_INTERFACE, "SetUpdateControlMap").append1(
            r#"{"id":"01234567-89ab-4def-8123-456789abcdef","states":{"ArtifactInstall_Enter":{"action":"pause"}}}"#,
        );
        let reply = handle(&config, &tokens, &mut forwarder, &good).unwrap();
        assert_eq!(reply.msg_type(), MessageType::MethodReturn, "{reply:?}");
        assert!(reply.get1::<i32>().is_some());
        // No argument.
        let mut reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call(UPDATE_PATH, UPDATE_INTERFACE, "SetUpdateControlMap"),
        )
        .unwrap();
        assert_eq!(
            error_name(&mut reply).as_deref(),
            Some("org.freedesktop.DBus.Error.InvalidArgs")
        );
        // Introspection and unknown calls.
        let reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call(AUTH_PATH, INTROSPECTABLE, "Introspect"),
        )
        .unwrap();
        let xml: &str = reply.get1().unwrap();
        assert!(xml.contains("JwtTokenStateChange"), "{xml}");
        let reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call("/", INTROSPECTABLE, "Introspect"),
        )
        .unwrap();
        assert!(
            reply
                .get1::<&str>()
                .unwrap()
                .contains("<node name=\"io\"/>")
        );
        let reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call(AUTH_PATH, AUTH_INTERFACE, "Nope"),
        )
        .unwrap();
        assert_eq!(reply.msg_type(), MessageType::Error);
        let reply = handle(
            &config,
            &tokens,
            &mut forwarder,
            &call(UPDATE_PATH, AUTH_INTERFACE, "GetJwtToken"),
        )
        .unwrap();
        assert_eq!(reply.msg_type(), MessageType::Error);
    }
}
