//! Fuzzes what `vault restore` reads, with the password `fuzz-password`: the first byte picks
//! the clear envelope (`parse_envelope`, then decryption and the contents) or the decrypted
//! contents alone (`parse_contents` for the name `fuzz`), since a mutated ciphertext never
//! passes AES-GCM's tag. PBKDF2 keys are cached by salt and iteration count, so seeds that
//! are real backups are decrypted at full speed while the header around them is mutated
//! (a header with a salt or count not seen in the first few is only parsed).
#![no_main]

use certroll::ops::vault::backup::{parse_contents, parse_envelope};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

type Key = Arc<aws_lc_rs::aead::LessSafeKey>;

fn keys() -> &'static Mutex<HashMap<(Vec<u8>, u32), Key>> {
    static KEYS: OnceLock<Mutex<HashMap<(Vec<u8>, u32), Key>>> = OnceLock::new();
    KEYS.get_or_init(Default::default)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let _ = parse_contents("fuzz.backup", "fuzz", rest);
        return;
    }
    let Ok(sealed) = parse_envelope("fuzz.backup", rest) else {
        return;
    };
    let id = (sealed.salt().to_vec(), sealed.iterations());
    let cached = keys().lock().unwrap().get(&id).cloned();
    let key = match cached {
        Some(key) => key,
        None => {
            // A new salt or count costs a full PBKDF2 (a fraction of a second): derive keys for
            // the first few (the seeds' own) and only parse the header of the rest.
            let mut map = keys().lock().unwrap();
            if map.len() >= 4 {
                return;
            }
            let key = Arc::new(sealed.derive_key("fuzz-password").expect("derive"));
            map.insert(id, key.clone());
            key
        }
    };
    let _ = sealed.open("fuzz.backup", &key);
});
