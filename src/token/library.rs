//! The library instance between C_Initialize and C_Finalize: the slot table, the session
//! table, and the entry points the ABI layer calls. One global instance guarded by a lock; a
//! forked child sees "not initialised" until it initialises itself.

use super::{Attr, AttrAnswer, Error, Mechanism, OutBuf, Result};
use cryptoki_sys::*;
use parking_lot::RwLock;

/// The initialised library.
pub struct Library {
    _private: (),
}

static LIBRARY: RwLock<Option<(u32, std::sync::Arc<Library>)>> = RwLock::new(None);

fn unsupported<T>() -> Result<T> {
    Err(Error::new(CKR_FUNCTION_NOT_SUPPORTED))
}

/// C_Initialize: creates the library (CKR_CRYPTOKI_ALREADY_INITIALIZED when it exists in this
/// process).
pub fn initialize() -> Result<()> {
    let mut lib = LIBRARY.write();
    let pid = std::process::id();
    if let Some((owner, _)) = lib.as_ref() {
        if *owner == pid {
            return Err(Error::new(CKR_CRYPTOKI_ALREADY_INITIALIZED));
        }
    }
    *lib = Some((pid, std::sync::Arc::new(Library { _private: () })));
    Ok(())
}

/// C_Finalize: drops the library, cancelling blocked C_WaitForSlotEvent calls.
pub fn finalize() -> Result<()> {
    let mut lib = LIBRARY.write();
    match lib.take() {
        Some((owner, _)) if owner == std::process::id() => Ok(()),
        _ => Err(Error::new(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
}

/// Runs `f` with the library, or fails with CKR_CRYPTOKI_NOT_INITIALIZED (also in a forked
/// child that inherited its parent's instance).
pub fn with<R>(f: impl FnOnce(&Library) -> Result<R>) -> Result<R> {
    let lib = {
        let guard = LIBRARY.read();
        match guard.as_ref() {
            Some((owner, lib)) if *owner == std::process::id() => std::sync::Arc::clone(lib),
            _ => return Err(Error::new(CKR_CRYPTOKI_NOT_INITIALIZED)),
        }
    };
    f(&lib)
}

#[allow(missing_docs, unused_variables)]
impl Library {
    pub fn slot_list(&self, token_present: bool) -> Result<Vec<CK_SLOT_ID>> {
        unsupported()
    }
    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO> {
        unsupported()
    }
    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO> {
        unsupported()
    }
    /// Blocks unless `dont_block`; CKR_NO_EVENT when nothing happened, CKR_CRYPTOKI_NOT_INITIALIZED
    /// when C_Finalize cancelled the wait.
    pub fn wait_for_slot_event(&self, dont_block: bool) -> Result<CK_SLOT_ID> {
        unsupported()
    }
    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        unsupported()
    }
    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mech: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        unsupported()
    }
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        unsupported()
    }
    pub fn close_session(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        unsupported()
    }
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        unsupported()
    }
    pub fn session_info(&self, session: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO> {
        unsupported()
    }
    pub fn login(&self, session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn logout(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        unsupported()
    }
    pub fn init_pin(&self, session: CK_SESSION_HANDLE, pin: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn set_pin(&self, session: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn create_object(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        unsupported()
    }
    pub fn destroy_object(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        unsupported()
    }
    pub fn object_size(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<CK_ULONG> {
        unsupported()
    }
    /// One answer per requested type, in order.
    pub fn get_attributes(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<AttrAnswer>> {
        unsupported()
    }
    pub fn set_attributes(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<()> {
        unsupported()
    }
    pub fn find_init(&self, session: CK_SESSION_HANDLE, template: &[Attr]) -> Result<()> {
        unsupported()
    }
    pub fn find(&self, session: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        unsupported()
    }
    pub fn find_final(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        unsupported()
    }
    pub fn digest_init(&self, session: CK_SESSION_HANDLE, mech: &Mechanism) -> Result<()> {
        unsupported()
    }
    pub fn digest(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: OutBuf<'_>,
    ) -> Result<usize> {
        unsupported()
    }
    pub fn digest_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn digest_final(&self, session: CK_SESSION_HANDLE, out: OutBuf<'_>) -> Result<usize> {
        unsupported()
    }
    pub fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        unsupported()
    }
    pub fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8], out: OutBuf<'_>) -> Result<usize> {
        unsupported()
    }
    pub fn sign_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn sign_final(&self, session: CK_SESSION_HANDLE, out: OutBuf<'_>) -> Result<usize> {
        unsupported()
    }
    pub fn verify_init(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        unsupported()
    }
    pub fn verify(&self, session: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn verify_update(&self, session: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn verify_final(&self, session: CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
        unsupported()
    }
    pub fn encrypt_init(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        unsupported()
    }
    pub fn encrypt(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: OutBuf<'_>,
    ) -> Result<usize> {
        unsupported()
    }
    pub fn decrypt_init(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        unsupported()
    }
    pub fn decrypt(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: OutBuf<'_>,
    ) -> Result<usize> {
        unsupported()
    }
    pub fn generate_key_pair(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &Mechanism,
        public_template: &[Attr],
        private_template: &[Attr],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        unsupported()
    }
    pub fn derive_key(
        &self,
        session: CK_SESSION_HANDLE,
        mech: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        unsupported()
    }
    pub fn generate_random(&self, session: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        unsupported()
    }
}
