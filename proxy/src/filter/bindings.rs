//! Host bindings generated from `wit/filter.wit`. The `message` resource is
//! backed by [`super::host::MessageState`]; every import may trap (a guest
//! handing back a stale resource, say) rather than panic the proxy.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "http-filter",
    with: { "wasp:filter/types.message": super::host::MessageState },
    imports: { default: trappable },
});
