//! Object management functions: create, destroy, size, attributes, search. C_GetAttributeValue
//! follows kryoptic: every attribute is answered, the first error wins.

use super::entry::{cryptoki_fixed, cryptoki_fn, in_session};
use super::raw::{self, AttrWrite};
use crate::token::{library, AttrAnswer, Error};
use cryptoki_sys::*;

cryptoki_fn! {
    /// C_CreateObject: certificates and private keys written to the card.
    export fn C_CreateObject(
        hSession: CK_SESSION_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
        phObject: *mut CK_OBJECT_HANDLE,
    ) {
        in_session(hSession, |lib| {
            if phObject.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            // SAFETY: a non-NULL pTemplate holds ulCount attributes with their values (PKCS#11
            // contract).
            let template = unsafe { raw::read_template(pTemplate.cast_const(), ulCount) }?;
            log::debug!("C_CreateObject: {template:?}");
            let object = lib.create_object(hSession, &template)?;
            // SAFETY: not NULL; a writable CK_OBJECT_HANDLE (PKCS#11 contract).
            unsafe { raw::write(phObject, object) }
        })
    }
}

cryptoki_fn! {
    /// C_DestroyObject.
    export fn C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) {
        library::with(|lib| lib.destroy_object(hSession, hObject))
    }
}

cryptoki_fn! {
    /// C_GetObjectSize.
    export fn C_GetObjectSize(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pulSize: *mut CK_ULONG) {
        in_session(hSession, |lib| {
            if pulSize.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let size = lib.object_size(hSession, hObject)?;
            // SAFETY: not NULL; a writable CK_ULONG (PKCS#11 contract).
            unsafe { raw::write(pulSize, size) }
        })
    }
}

/// The error one attribute answer contributes to C_GetAttributeValue, if any.
fn attribute_error(answer: &AttrAnswer, written: Option<AttrWrite>) -> Option<CK_RV> {
    match (answer, written) {
        (AttrAnswer::Value(_), Some(AttrWrite::TooSmall)) => Some(CKR_BUFFER_TOO_SMALL),
        (AttrAnswer::Value(_), _) => None,
        (AttrAnswer::Sensitive, _) => Some(CKR_ATTRIBUTE_SENSITIVE),
        (AttrAnswer::Invalid, _) => Some(CKR_ATTRIBUTE_TYPE_INVALID),
    }
}

cryptoki_fn! {
    /// C_GetAttributeValue: every attribute is processed. NULL pValue → length; a value that
    /// fits → copied with its length; too small → CK_UNAVAILABLE_INFORMATION and
    /// CKR_BUFFER_TOO_SMALL; sensitive → CK_UNAVAILABLE_INFORMATION and
    /// CKR_ATTRIBUTE_SENSITIVE; absent → CK_UNAVAILABLE_INFORMATION and
    /// CKR_ATTRIBUTE_TYPE_INVALID. The first error in template order is returned.
    export fn C_GetAttributeValue(
        hSession: CK_SESSION_HANDLE,
        hObject: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
    ) {
        in_session(hSession, |lib| {
            // SAFETY: a non-NULL pTemplate holds ulCount attributes (PKCS#11 contract).
            let types = unsafe { raw::template_types(pTemplate.cast_const(), ulCount) }?;
            let answers = lib.get_attributes(hSession, hObject, &types)?;
            if answers.len() != types.len() {
                log::error!(
                    "C_GetAttributeValue: core answered {} of {} attributes",
                    answers.len(),
                    types.len()
                );
                return Err(CKR_GENERAL_ERROR.into());
            }
            let mut first_error = None;
            for (index, (ty, answer)) in types.iter().zip(&answers).enumerate() {
                let written = match answer {
                    // SAFETY: pTemplate holds ulCount > index writable attributes, each non-NULL
                    // pValue with ulValueLen writable bytes (PKCS#11 contract).
                    AttrAnswer::Value(v) => Some(unsafe { raw::answer_attribute(pTemplate, index, v) }?),
                    AttrAnswer::Sensitive | AttrAnswer::Invalid => {
                        // SAFETY: as above.
                        unsafe { raw::mark_unavailable(pTemplate, index) }?;
                        None
                    }
                };
                let error = attribute_error(answer, written);
                log::debug!(
                    "C_GetAttributeValue: {ty:#x} -> {}",
                    match (answer, error) {
                        (AttrAnswer::Value(v), None) => format!("{} bytes", v.len()),
                        (AttrAnswer::Value(v), Some(_)) => format!("{} bytes, buffer too small", v.len()),
                        (AttrAnswer::Sensitive, _) => "sensitive".to_owned(),
                        (AttrAnswer::Invalid, _) => "invalid".to_owned(),
                    }
                );
                first_error = first_error.or(error);
            }
            first_error.map_or(Ok(()), |rv| Err(Error::new(rv)))
        })
    }
}

cryptoki_fn! {
    /// C_SetAttributeValue.
    export fn C_SetAttributeValue(
        hSession: CK_SESSION_HANDLE,
        hObject: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
    ) {
        in_session(hSession, |lib| {
            // SAFETY: a non-NULL pTemplate holds ulCount attributes with their values (PKCS#11
            // contract).
            let template = unsafe { raw::read_template(pTemplate.cast_const(), ulCount) }?;
            log::debug!("C_SetAttributeValue: {template:?}");
            lib.set_attributes(hSession, hObject, &template)
        })
    }
}

cryptoki_fn! {
    /// C_FindObjectsInit: an empty template (NULL with count 0) finds every object.
    export fn C_FindObjectsInit(hSession: CK_SESSION_HANDLE, pTemplate: *mut CK_ATTRIBUTE, ulCount: CK_ULONG) {
        in_session(hSession, |lib| {
            // SAFETY: a non-NULL pTemplate holds ulCount attributes with their values (PKCS#11
            // contract).
            let template = unsafe { raw::read_template(pTemplate.cast_const(), ulCount) }?;
            log::debug!("C_FindObjectsInit: {template:?}");
            lib.find_init(hSession, &template)
        })
    }
}

cryptoki_fn! {
    /// C_FindObjects: up to ulMaxObjectCount handles into phObject, their number into
    /// pulObjectCount.
    export fn C_FindObjects(
        hSession: CK_SESSION_HANDLE,
        phObject: *mut CK_OBJECT_HANDLE,
        ulMaxObjectCount: CK_ULONG,
        pulObjectCount: *mut CK_ULONG,
    ) {
        in_session(hSession, |lib| {
            if pulObjectCount.is_null() || phObject.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let max = raw::to_usize(ulMaxObjectCount)?;
            // SAFETY: not NULL; ulMaxObjectCount writable handles (PKCS#11 contract).
            let out = unsafe { raw::slice_mut(phObject, ulMaxObjectCount) }?;
            let found = lib.find(hSession, max)?;
            if found.len() > out.len() {
                log::error!("C_FindObjects: core returned {} > {max} handles", found.len());
                return Err(CKR_GENERAL_ERROR.into());
            }
            for (dst, src) in out.iter_mut().zip(&found) {
                *dst = *src;
            }
            // SAFETY: not NULL; a writable CK_ULONG (PKCS#11 contract).
            unsafe { raw::write(pulObjectCount, raw::to_ulong(found.len())?) }
        })
    }
}

cryptoki_fn! {
    /// C_FindObjectsFinal.
    export fn C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) {
        library::with(|lib| lib.find_final(hSession))
    }
}

cryptoki_fixed! {
    export CKR_FUNCTION_NOT_SUPPORTED =>
    fn C_CopyObject(
        hSession: CK_SESSION_HANDLE,
        hObject: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
        phNewObject: *mut CK_OBJECT_HANDLE,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_errors() {
        let v = AttrAnswer::Value(vec![1]);
        assert_eq!(attribute_error(&v, Some(AttrWrite::Done)), None);
        assert_eq!(
            attribute_error(&v, Some(AttrWrite::TooSmall)),
            Some(CKR_BUFFER_TOO_SMALL)
        );
        assert_eq!(
            attribute_error(&AttrAnswer::Sensitive, None),
            Some(CKR_ATTRIBUTE_SENSITIVE)
        );
        assert_eq!(
            attribute_error(&AttrAnswer::Invalid, None),
            Some(CKR_ATTRIBUTE_TYPE_INVALID)
        );
    }
}
