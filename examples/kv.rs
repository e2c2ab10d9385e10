//! The original Remora's model: a server executable owns a service (here a
//! small key-value store), spawns the application (this same executable in
//! its other role) and serves the application's calls until it exits.
//!
//! ```text
//! cargo run --release --example kv
//! ```
//!
//! The server reads each request where it lies (a private copy: the
//! parent's default) and answers with a reference to the value it stores;
//! the application reads each reply in place (a spawned child trusts its
//! parent). A handler's error (`KvError`) reaches the caller as a value it
//! can match.

use std::collections::HashMap;
use std::error::Error;

use remora::{Client, RecvError, Server, Spawner};

/// What the application asks.
#[derive(rkyv::Archive, rkyv::Serialize)]
enum KvRequest {
    Get { key: String },
    Put { key: String, value: String },
    Delete { key: String },
}

/// What the store answers: the value read, or the value a put or delete
/// replaced (if any).
type KvResponse = Option<String>;

/// Why the store refused.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug))]
enum KvError {
    NotFound { key: String },
    EmptyKey,
}

fn main() -> Result<(), Box<dyn Error>> {
    if std::env::var_os(remora::CHANNEL_ENV).is_some() {
        return application();
    }
    server()
}

/// The parent: owns the store, spawns the application, serves it.
fn server() -> Result<(), Box<dyn Error>> {
    let mut app = Spawner::new(std::env::current_exe()?)
        .channel("kv")
        .spawn()?;
    println!(
        "server: spawned the application (pid {}) over {}",
        app.id(),
        app.transport()
    );
    let mut server: Server<KvRequest, KvResponse, KvError> = Server::new(app.channel("kv")?);
    let mut store: HashMap<String, String> = HashMap::new();
    let mut served = 0;
    loop {
        let call = match server.recv() {
            Ok(call) => call,
            Err(RecvError::Disconnected) => break, // the application is done
            Err(e) => return Err(e.into()),
        };
        served += 1;
        match &*call {
            ArchivedKvRequest::Get { key } => match store.get(key.as_str()) {
                Some(value) => call.reply(Ok(&Some(value.clone())))?,
                None => {
                    let key = key.to_string();
                    call.reply(Err(&KvError::NotFound { key }))?
                }
            },
            ArchivedKvRequest::Put { key, .. } if key.is_empty() => {
                call.reply(Err(&KvError::EmptyKey))?
            }
            ArchivedKvRequest::Put { key, value } => {
                let old = store.insert(key.to_string(), value.to_string());
                call.reply(Ok(&old))?
            }
            ArchivedKvRequest::Delete { key } => match store.remove(key.as_str()) {
                Some(old) => call.reply(Ok(&Some(old)))?,
                None => {
                    let key = key.to_string();
                    call.reply(Err(&KvError::NotFound { key }))?
                }
            },
        }
    }
    let status = app.wait()?;
    println!(
        "server: served {served} calls; application exited with {status}; {} keys left",
        store.len()
    );
    Ok(())
}

/// The child: the application, calling its server.
fn application() -> Result<(), Box<dyn Error>> {
    let conn = remora::connect()?;
    let mut kv: Client<KvRequest, KvResponse, KvError> = Client::new(conn.channel("kv")?);
    let put = |key: &str, value: &str| KvRequest::Put {
        key: key.into(),
        value: value.into(),
    };

    // One call at a time.
    show(
        "put lang=rust",
        &kv.call(&put("lang", "rust"))?
            .result()
            .map(|v| v.as_deref()),
    );
    show(
        "put lang=go",
        &kv.call(&put("lang", "go"))?.result().map(|v| v.as_deref()),
    );
    let get = KvRequest::Get { key: "lang".into() };
    show("get lang", &kv.call(&get)?.result().map(|v| v.as_deref()));
    let missing = KvRequest::Get { key: "nope".into() };
    match kv.call(&missing)?.result() {
        Ok(value) => println!("app: get nope -> {:?}", value.as_deref()),
        Err(ArchivedKvError::NotFound { key }) => println!("app: get nope -> not found: {key:?}"),
        Err(other) => println!("app: get nope -> {other:?}"),
    }
    show(
        "put \"\"=x",
        &kv.call(&put("", "x"))?.result().map(|v| v.as_deref()),
    );

    // Pipelined: start several calls, then collect the replies.
    let mut tickets = Vec::new();
    for i in 0..5 {
        tickets.push(kv.start(&put(&format!("k{i}"), &format!("v{i}")))?);
    }
    for _ in 0..tickets.len() {
        let reply = kv.recv_reply()?;
        let i = tickets
            .iter()
            .position(|t| *t == reply.ticket())
            .unwrap_or(usize::MAX);
        println!(
            "app: pipelined put k{i} -> {:?}",
            reply.result().map(|v| v.as_deref())
        );
    }
    let delete = KvRequest::Delete { key: "k3".into() };
    show(
        "delete k3",
        &kv.call(&delete)?.result().map(|v| v.as_deref()),
    );
    show(
        "delete k3 again",
        &kv.call(&delete)?.result().map(|v| v.as_deref()),
    );
    Ok(())
}

fn show(what: &str, result: &Result<Option<&str>, &ArchivedKvError>) {
    match result {
        Ok(value) => println!("app: {what} -> {value:?}"),
        Err(e) => println!("app: {what} -> error {e:?}"),
    }
}
