//! Objects on the token: find, attributes, and the writes (create, destroy, generate) that
//! go to the card through [`crate::token::write`].

use super::{err, Library};
use crate::token::objects::{self, ObjectId};
use crate::token::session::Handle;
use crate::token::slot::Login;
use crate::token::{Attr, AttrAnswer, Error, Mechanism, Result};
use cryptoki_sys::*;

impl Library {
    /// C_FindObjectsInit.
    pub fn find_init(&self, h: CK_SESSION_HANDLE, template: &[Attr]) -> Result<()> {
        let (slot, _) = self.session_slot(h)?;
        self.with_session(h, |s| {
            if s.find.is_some() {
                err(CKR_OPERATION_ACTIVE)
            } else {
                Ok(())
            }
        })?;
        let mut found = Vec::new();
        self.with_current_card(&slot, |state| {
            let login = state.login;
            let card = state
                .card
                .as_ref()
                .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
            for id in objects::object_ids(&card.contents.entries, slot.part) {
                let entry = id.slot().and_then(|s| card.contents.entry(s));
                if objects::is_private(id, entry) && login != Login::User {
                    continue;
                }
                let alias = id.slot().and_then(|s| card.id_aliases.get(&s));
                let matches = template
                    .iter()
                    .all(|a| match objects::attribute(id, entry, a.ty) {
                        AttrAnswer::Value(v) => {
                            v == *a.value
                                || (a.ty == CKA_ID && alias.is_some_and(|x| *x == *a.value))
                        }
                        _ => false,
                    });
                if matches {
                    found.push(Handle::Token(slot.id, id));
                }
            }
            Ok(())
        })?;
        let mut handles: Vec<CK_OBJECT_HANDLE> = {
            let mut table = self.handles.lock();
            found.into_iter().map(|f| table.handle(f)).collect()
        };
        for (n, (owner, obj)) in self.session_objects.lock().iter() {
            if *owner == h
                && template
                    .iter()
                    .all(|a| obj.attributes.get(&a.ty).is_some_and(|v| **v == *a.value))
            {
                handles.push(*n);
            }
        }
        self.with_session(h, |s| {
            s.find = Some(handles.into());
            Ok(())
        })
    }

    /// C_FindObjects.
    pub fn find(&self, h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        self.session_slot(h)?;
        self.with_session(h, |s| {
            let pending = s
                .find
                .as_mut()
                .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))?;
            let n = max.min(pending.len());
            Ok(pending.drain(..n).collect())
        })
    }

    /// C_FindObjectsFinal.
    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.session_slot(h)?;
        self.with_session(h, |s| {
            s.find
                .take()
                .map(|_| ())
                .ok_or(Error::new(CKR_OPERATION_NOT_INITIALIZED))
        })
    }

    /// C_GetAttributeValue: one answer per requested type.
    pub fn get_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<AttrAnswer>> {
        let (slot, _) = self.session_slot(h)?;
        if let Some((owner, obj)) = self.session_objects.lock().get(&object) {
            if *owner != h {
                return err(CKR_OBJECT_HANDLE_INVALID);
            }
            return Ok(types
                .iter()
                .map(|t| match obj.attributes.get(t) {
                    Some(_) if obj.sensitive && *t == CKA_VALUE => AttrAnswer::Sensitive,
                    Some(v) => AttrAnswer::Value(v.to_vec()),
                    None => AttrAnswer::Invalid,
                })
                .collect());
        }
        let (id, entry) = self.resolve(&slot, object, CKR_OBJECT_HANDLE_INVALID)?;
        Ok(types
            .iter()
            .map(|t| objects::attribute(id, entry.as_ref(), *t))
            .collect())
    }

    /// C_GetObjectSize.
    pub fn object_size(&self, h: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        let answers = self.get_attributes(h, object, &[CKA_VALUE])?;
        Ok(match answers.first() {
            Some(AttrAnswer::Value(v)) => v.len() as CK_ULONG,
            _ => CK_UNAVAILABLE_INFORMATION,
        })
    }

    /// C_SetAttributeValue. The card stores no labels or IDs, so token objects keep theirs;
    /// what applications set while filing a key they just created (NSS gives the key the
    /// certificate's nickname, subject and a hash of its public key as CKA_ID) is accepted on
    /// key objects: a new CKA_ID becomes an alias find answers to, a label or subject is taken
    /// as a hint (the subject is the certificate's anyway). Anything else must equal what the
    /// object already has.
    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<()> {
        let types: Vec<_> = template.iter().map(|a| a.ty).collect();
        let current = self.get_attributes(h, object, &types)?;
        let (slot, _) = self.session_slot(h)?;
        let key_slot = match self.handles.lock().by_handle.get(&object) {
            Some(Handle::Token(_, ObjectId::PrivateKey(s) | ObjectId::PublicKey(s))) => Some(*s),
            _ => None,
        };
        let mut new_alias = None;
        for (a, cur) in template.iter().zip(current) {
            match cur {
                AttrAnswer::Value(v) if v == *a.value => {}
                AttrAnswer::Invalid => return err(CKR_ATTRIBUTE_TYPE_INVALID),
                AttrAnswer::Value(_) if key_slot.is_some() && a.ty == CKA_ID => {
                    new_alias = Some(a.value.to_vec())
                }
                AttrAnswer::Value(_)
                    if key_slot.is_some() && matches!(a.ty, CKA_LABEL | CKA_SUBJECT) =>
                {
                    log::debug!(
                        "attribute {:#x} of a card key kept as the card has it",
                        a.ty
                    );
                }
                _ => return err(CKR_ATTRIBUTE_READ_ONLY),
            }
        }
        if let (Some(alias), Some(ks)) = (new_alias, key_slot) {
            let mut state = slot.state.lock();
            if let Some(card) = state.card.as_mut() {
                card.id_aliases.insert(ks, alias);
            }
        }
        Ok(())
    }

    /// C_CreateObject: certificates and private keys go to the card.
    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let (slot, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }
        let id = self.with_card(&slot, |state| {
            crate::token::write::create(&slot.source, slot.part, state, template)
        })?;
        Ok(self.handles.lock().handle(Handle::Token(slot.id, id)))
    }

    /// C_DestroyObject.
    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Result<()> {
        let (slot, rw) = self.session_slot(h)?;
        if self.session_objects.lock().remove(&object).is_some() {
            self.handles.lock().forget(object);
            return Ok(());
        }
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }
        let (id, _) = self.resolve(&slot, object, CKR_OBJECT_HANDLE_INVALID)?;
        self.with_card(&slot, |state| {
            crate::token::write::destroy(&slot.source, state, id)
        })
    }

    /// C_GenerateKeyPair on the card.
    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        public_template: &[Attr],
        private_template: &[Attr],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let (slot, rw) = self.session_slot(h)?;
        if !rw {
            return err(CKR_SESSION_READ_ONLY);
        }
        let key_slot = self.with_card(&slot, |state| {
            crate::token::write::generate(
                &slot.source,
                slot.part,
                state,
                mech,
                public_template,
                private_template,
            )
        })?;
        let mut handles = self.handles.lock();
        Ok((
            handles.handle(Handle::Token(slot.id, ObjectId::PublicKey(key_slot))),
            handles.handle(Handle::Token(slot.id, ObjectId::PrivateKey(key_slot))),
        ))
    }
}
