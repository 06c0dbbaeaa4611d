//! `wasp:filter@0.1.0` (`wit/0.1/filter.wit`), still served: each phase
//! lends the guest a `message` resource over the host's [`MessageState`],
//! and every read or change is a call back into wasp. Every import may trap
//! (a guest handing back a stale resource, say) rather than panic the proxy.

use super::host::HostState;
use super::message::{BodyMode, Decision, Edit, Head, MessageState, Refused, Reply};
use wasmtime::component::Resource;

wasmtime::component::bindgen!({
    path: "../wit/0.1",
    world: "http-filter",
    with: { "wasp:filter/types.message": super::host::Message },
    imports: { default: trappable },
});

use self::wasp::filter::{host, types};
pub use exports::wasp::filter::{connection, handler};

type Res<T> = wasmtime::Result<T>;

impl From<types::Decision> for Decision {
    fn from(d: types::Decision) -> Self {
        match d {
            types::Decision::Continue => Decision::Continue,
            types::Decision::Wait => Decision::Wait,
            types::Decision::Reply(r) => Decision::Reply(Reply {
                status: r.status,
                headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                body: r.body,
            }),
        }
    }
}

/// The connection facts, as 0.1 passes them.
pub fn connection_info(info: &super::v02::types::ConnectionInfo<'_>) -> types::ConnectionInfo {
    let text = |v: Option<&str>| v.map(str::to_string);
    types::ConnectionInfo {
        peer: info.peer.to_string(),
        local: info.local.to_string(),
        sni: text(info.sni),
        alpn: text(info.alpn),
        identity: text(info.identity),
    }
}

/// A 0.1 connection decision in 0.2's terms (the same shape).
pub fn connection_decision(d: types::ConnectionDecision) -> super::v02::types::ConnectionDecision {
    match d {
        types::ConnectionDecision::Allow => super::v02::types::ConnectionDecision::Allow,
        types::ConnectionDecision::Deny(why) => super::v02::types::ConnectionDecision::Deny(why),
    }
}

fn header_list(map: Option<&http::HeaderMap>) -> Vec<types::Header> {
    map.map_or_else(Vec::new, |map| {
        map.iter().map(|(n, v)| types::Header { name: n.as_str().to_string(), value: v.as_bytes().to_vec() }).collect()
    })
}

impl HostState {
    /// Checks one edit and applies it if it fits; a framing field is reported.
    fn edit(&mut self, m: &Resource<MessageState>, edit: Result<Edit, Refused>) -> Res<Result<(), String>> {
        let edit = match edit {
            Ok(e) => e,
            Err(refused) => {
                if let Refused::Framing(name) = &refused {
                    self.shared.refuse_framing(name);
                }
                return Ok(Err(refused.to_string()));
            }
        };
        let state = self.table.get_mut(m)?;
        Ok(state.fits(&edit).map(|()| state.apply(edit)))
    }
}

impl types::Host for HostState {}

impl types::HostMessage for HostState {
    fn method(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(match &self.table.get(&m)?.head {
            Head::Request(p) => p.method.as_str().to_string(),
            Head::Response(_) | Head::Sent => String::new(),
        })
    }

    fn set_method(&mut self, m: Resource<MessageState>, method: String) -> Res<Result<(), String>> {
        self.edit(&m, Edit::method(&method))
    }

    fn path(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(self.table.get(&m)?.path().unwrap_or_default().to_string())
    }

    fn set_path(&mut self, m: Resource<MessageState>, path: String) -> Res<Result<(), String>> {
        if !matches!(self.table.get(&m)?.head, Head::Request(_)) {
            return Ok(Err("not a request head (a response, or already sent)".into()));
        }
        self.edit(&m, Edit::path(&path))
    }

    fn authority(&mut self, m: Resource<MessageState>) -> Res<Option<String>> {
        Ok(self.table.get(&m)?.authority().map(str::to_string))
    }

    fn set_authority(&mut self, m: Resource<MessageState>, authority: String) -> Res<Result<(), String>> {
        if !matches!(self.table.get(&m)?.head, Head::Request(_)) {
            return Ok(Err("not a request head (a response, or already sent)".into()));
        }
        self.edit(&m, Edit::authority(&authority))
    }

    fn status(&mut self, m: Resource<MessageState>) -> Res<u16> {
        Ok(match &self.table.get(&m)?.head {
            Head::Response(p) => p.status.as_u16(),
            Head::Request(_) | Head::Sent => 0,
        })
    }

    fn get_header(&mut self, m: Resource<MessageState>, name: String) -> Res<Option<Vec<u8>>> {
        Ok(self.table.get(&m)?.headers().and_then(|h| h.get(name.as_str())).map(|v| v.as_bytes().to_vec()))
    }

    fn get_header_all(&mut self, m: Resource<MessageState>, name: String) -> Res<Vec<Vec<u8>>> {
        let Some(headers) = self.table.get(&m)?.headers() else { return Ok(Vec::new()) };
        Ok(headers.get_all(name.as_str()).iter().map(|v| v.as_bytes().to_vec()).collect())
    }

    fn header_names(&mut self, m: Resource<MessageState>) -> Res<Vec<String>> {
        Ok(self.table.get(&m)?.headers().map_or_else(Vec::new, |h| h.keys().map(|k| k.as_str().to_string()).collect()))
    }

    fn set_header(&mut self, m: Resource<MessageState>, name: String, value: Vec<u8>) -> Res<Result<(), String>> {
        let is_request = matches!(self.table.get(&m)?.head, Head::Request(_));
        self.edit(&m, Edit::set_header(&name, value.into(), is_request))
    }

    fn append_header(&mut self, m: Resource<MessageState>, name: String, value: Vec<u8>) -> Res<Result<(), String>> {
        self.edit(&m, Edit::append_header(&name, value.into()))
    }

    fn remove_header(&mut self, m: Resource<MessageState>, name: String) -> Res<()> {
        // An invalid name names no header: nothing to remove.
        let _ = self.edit(&m, Edit::remove_header(&name))?;
        Ok(())
    }

    fn request_id(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(self.table.get(&m)?.facts.request_id.to_str().unwrap_or_default().to_string())
    }

    fn peer(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(self.table.get(&m)?.facts.peer.to_string())
    }

    fn route(&mut self, m: Resource<MessageState>) -> Res<String> {
        Ok(self.table.get(&m)?.facts.route.to_string())
    }

    fn peer_identity(&mut self, m: Resource<MessageState>) -> Res<Option<String>> {
        Ok(self.table.get(&m)?.facts.identity.as_deref().map(str::to_string))
    }

    fn read_body(&mut self, m: Resource<MessageState>, mode: types::BodyMode) -> Res<()> {
        self.table.get_mut(&m)?.wants = Some(match mode {
            types::BodyMode::Buffer => BodyMode::Buffer,
            types::BodyMode::Stream => BodyMode::Stream,
        });
        Ok(())
    }

    fn body(&mut self, m: Resource<MessageState>) -> Res<Vec<u8>> {
        Ok(self.table.get(&m)?.body.data.to_vec())
    }

    fn set_body(&mut self, m: Resource<MessageState>, body: Vec<u8>) -> Res<()> {
        self.table.get_mut(&m)?.body.data = body.into();
        Ok(())
    }

    fn end_of_stream(&mut self, m: Resource<MessageState>) -> Res<bool> {
        Ok(self.table.get(&m)?.body.end)
    }

    fn trailers(&mut self, m: Resource<MessageState>) -> Res<Vec<types::Header>> {
        Ok(header_list(self.table.get(&m)?.body.trailers.as_ref()))
    }

    fn set_trailer(&mut self, m: Resource<MessageState>, name: String, value: Vec<u8>) -> Res<Result<(), String>> {
        self.edit(&m, Edit::trailer(&name, value.into()))
    }

    fn drop(&mut self, m: Resource<MessageState>) -> Res<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

/// The answer to a call, as 0.1 passes it.
pub fn answer(answer: &super::call::Answer) -> Result<types::CallResponse, String> {
    match answer {
        Ok(r) => Ok(types::CallResponse {
            status: r.status,
            headers: r.headers.iter().map(|(n, v)| types::Header { name: n.clone(), value: v.clone() }).collect(),
            body: r.body.clone(),
        }),
        Err(e) => Err(e.clone()),
    }
}

super::host::bind_host_imports!(types, host);
