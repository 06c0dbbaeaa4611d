//! A component built against a future, incompatible `wasp:filter@9.0.0`:
//! wasp must refuse it and name both versions.

wit_bindgen::generate!({
    inline: r#"
        package wasp:filter@9.0.0;
        interface host { log: func(message: string); }
        interface handler { init: func(config: string) -> result<_, string>; }
        world future-filter { import host; export handler; }
    "#,
});

struct Future;

impl exports::wasp::filter::handler::Guest for Future {
    fn init(_config: String) -> Result<(), String> {
        wasp::filter::host::log("from the future");
        Ok(())
    }
}

export!(Future);
