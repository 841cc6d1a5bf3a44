//! The rules a route handler follows, checked on the parsed function. Independent mistakes are
//! reported together.

use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Type};

use crate::parse::RouteAttr;

/// One argument of the handler, in declaration order.
#[allow(clippy::large_enum_variant)] // a handful per macro call
pub(crate) enum Arg {
    /// The decoded request, by value.
    Payload(Type),
    /// `&Connection`.
    ConnRef,
    /// `Connection` (a clone).
    ConnOwned,
    /// `&CallContext`.
    CallRef,
    /// `CallContext` (a clone).
    CallOwned,
}

/// What the handler returns.
#[allow(clippy::large_enum_variant)] // one per macro call
pub(crate) enum Ret {
    /// Nothing (`()`).
    Unit,
    /// A value of this type (`T` or `Option<T>`).
    Value(Type),
    /// `Result<T, E>`.
    Result(Type, Type),
}

/// A handler that passed every rule.
pub(crate) struct Handler {
    pub(crate) path: syn::LitStr,
    pub(crate) krate: syn::Path,
    pub(crate) func: ItemFn,
    pub(crate) args: Vec<Arg>,
    pub(crate) ret: Ret,
}

impl Handler {
    pub(crate) fn payload(&self) -> Option<&Type> {
        self.args.iter().find_map(|a| match a {
            Arg::Payload(t) => Some(t),
            _ => None,
        })
    }
}

struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

pub(crate) fn check(mut attr: RouteAttr, func: ItemFn) -> syn::Result<Handler> {
    let mut errors = Errors(attr.errors.take());
    let path = attr.path.value();
    if !path.starts_with('/') {
        errors.push(syn::Error::new_spanned(
            &attr.path,
            format!(
                "route path must start with `/`, like \"/{}\"",
                path.trim_start_matches('/')
            ),
        ));
    }
    if path.chars().any(char::is_whitespace) {
        errors.push(syn::Error::new_spanned(
            &attr.path,
            "route path must not contain whitespace",
        ));
    }
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "route handlers cannot be generic: the request and response types must be concrete",
        ));
    } else if let Some(w) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            w,
            "route handlers cannot have a where clause",
        ));
    }
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new_spanned(c, "route handlers cannot be `const fn`"));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(u, "route handlers cannot be `unsafe fn`"));
    }
    if let Some(a) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            a,
            "route handlers cannot have an `extern` ABI",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(v, "route handlers cannot be variadic"));
    }

    let mut args = Vec::new();
    let mut payload_pat: Option<&Pat> = None;
    let mut seen: Vec<&'static str> = Vec::new();
    for input in &sig.inputs {
        let typed = match input {
            FnArg::Receiver(r) => {
                errors.push(syn::Error::new_spanned(
                    r,
                    "a route handler cannot take `self`: use a free function",
                ));
                continue;
            }
            FnArg::Typed(t) => t,
        };
        match classify(&typed.ty) {
            Ok(Some(extra)) => {
                let what = match extra {
                    Arg::ConnRef | Arg::ConnOwned => "the connection",
                    _ => "the call context",
                };
                if seen.contains(&what) {
                    errors.push(syn::Error::new_spanned(
                        &typed.pat,
                        format!("{what} is taken twice"),
                    ));
                }
                seen.push(what);
                args.push(extra);
            }
            Ok(None) => {
                if let Some(first) = payload_pat {
                    errors.push(syn::Error::new_spanned(
                        &typed.pat,
                        format!(
                            "a route handler takes at most one payload argument, and `{}` is already it; \
                             put both in one struct",
                            quote::ToTokens::to_token_stream(first)
                        ),
                    ));
                    continue;
                }
                payload_pat = Some(&typed.pat);
                args.push(Arg::Payload((*typed.ty).clone()));
            }
            Err(e) => errors.push(e),
        }
    }

    let ret = match &sig.output {
        ReturnType::Default => Ret::Unit,
        ReturnType::Type(_, ty) => match return_kind(ty) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                Ret::Unit
            }
        },
    };

    if let Some(e) = errors.0 {
        return Err(e);
    }
    let krate = attr.krate.unwrap_or_else(|| syn::parse_quote!(::webmesh));
    Ok(Handler {
        path: attr.path,
        krate,
        func,
        args,
        ret,
    })
}

fn last_ident(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

/// `Some` for a connection argument, `None` for the payload.
fn classify(ty: &Type) -> syn::Result<Option<Arg>> {
    let named = |t: &Type, name: &str| last_ident(t).is_some_and(|s| s.ident == name);
    match ty {
        Type::Reference(r) if named(&r.elem, "Connection") || named(&r.elem, "CallContext") => {
            let conn = named(&r.elem, "Connection");
            match &r.mutability {
                None if conn => Ok(Some(Arg::ConnRef)),
                None => Ok(Some(Arg::CallRef)),
                Some(m) => Err(syn::Error::new_spanned(
                    m,
                    if conn {
                        "unsupported argument type `&mut Connection`: take `&Connection` (it is shared)"
                    } else {
                        "unsupported argument type `&mut CallContext`: take `&CallContext`"
                    },
                )),
            }
        }
        Type::Reference(r) => Err(syn::Error::new_spanned(
            r,
            "unsupported argument type: the payload is taken by value (an owned type that \
             implements `Deserialize`); the only references allowed are `&Connection` and \
             `&CallContext`",
        )),
        Type::ImplTrait(t) => Err(syn::Error::new_spanned(
            t,
            "unsupported argument type `impl Trait`: the payload must be a concrete type",
        )),
        Type::Infer(t) => Err(syn::Error::new_spanned(t, "the payload type must be written out")),
        t if named(t, "Connection") => Ok(Some(Arg::ConnOwned)),
        t if named(t, "CallContext") => Ok(Some(Arg::CallOwned)),
        _ => Ok(None),
    }
}

fn return_kind(ty: &Type) -> syn::Result<Ret> {
    if let Type::Tuple(t) = ty {
        if t.elems.is_empty() {
            return Ok(Ret::Unit);
        }
    }
    if let Type::ImplTrait(t) = ty {
        return Err(syn::Error::new_spanned(
            t,
            "the return type must be a concrete type: `impl Trait` cannot be sent to the caller",
        ));
    }
    let Some(seg) = last_ident(ty) else {
        return Ok(Ret::Value(ty.clone()));
    };
    if seg.ident != "Result" {
        return Ok(Ret::Value(ty.clone()));
    }
    let types: Vec<&Type> = match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        [ok, err] => Ok(Ret::Result((*ok).clone(), (*err).clone())),
        _ => Err(syn::Error::new(
            ty.span(),
            "write the result as `Result<T, E>` with both types: the error type travels to the \
             caller, so an alias that hides it (like `io::Result<T>`) cannot be used",
        )),
    }
}
