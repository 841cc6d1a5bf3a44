//! The rules a route handler follows, checked on the parsed function. Independent mistakes are
//! reported together, and the checks go on past a mistake so that the expansion can still emit
//! the route's client half (one mistake, one error: no cascade where the route is used).

use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

use crate::parse::RouteAttr;

/// Type names taken as context arguments (filled in from the call, not decoded from the payload).
/// The generated code passes them through `FromCall`, so the compiler checks that they are
/// webmesh's types and not a payload type that happens to have one of these names.
pub(crate) const CONTEXT_TYPES: &[&str] = &["Connection", "CallContext", "State"];

/// One argument of the handler, in declaration order.
#[allow(clippy::large_enum_variant)] // a handful per macro call
pub(crate) enum Arg {
    /// The decoded request, by value.
    Payload(Type),
    /// A context argument (`&Connection`, `CallContext`, ...), as written.
    Context(Type),
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

/// A handler, as far as it could be read.
pub(crate) struct Handler {
    pub(crate) path: syn::LitStr,
    pub(crate) server_feature: Option<syn::LitStr>,
    pub(crate) krate: syn::Path,
    pub(crate) func: ItemFn,
    pub(crate) args: Vec<Arg>,
    pub(crate) ret: Ret,
    /// False when a type of the signature cannot be named from the generated code (generic
    /// parameters, `impl Trait`, `_`): then only a placeholder of the client half is emitted.
    pub(crate) types_ok: bool,
}

impl Handler {
    pub(crate) fn payload(&self) -> Option<&Type> {
        self.args.iter().find_map(|a| match a {
            Arg::Payload(t) => Some(t),
            Arg::Context(_) => None,
        })
    }
}

#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn into_inner(self) -> Option<syn::Error> {
        self.0
    }
}

/// Checks `func` under `attr`; the handler as far as it could be read, and every mistake.
pub(crate) fn check(mut attr: RouteAttr, func: ItemFn, errors: &mut Errors) -> Handler {
    if let Some(e) = attr.errors.take() {
        errors.push(e);
    }
    check_path(&attr.path, errors);
    let mut types_ok = true;
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        types_ok = false;
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
    let mut payload_pat: Option<&syn::Pat> = None;
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
            Ok(arg @ Arg::Context(_)) => args.push(arg),
            Ok(Arg::Payload(ty)) => {
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
                args.push(Arg::Payload(ty));
            }
            Err((e, nameable)) => {
                types_ok &= nameable;
                errors.push(e);
            }
        }
    }

    let ret = match &sig.output {
        ReturnType::Default => Ret::Unit,
        ReturnType::Type(_, ty) => match return_kind(ty) {
            Ok(r) => r,
            Err(e) => {
                types_ok = false;
                errors.push(e);
                Ret::Unit
            }
        },
    };

    let krate = attr.krate.unwrap_or_else(|| syn::parse_quote!(::webmesh));
    Handler {
        path: attr.path,
        server_feature: attr.server_feature,
        krate,
        func,
        args,
        ret,
        types_ok,
    }
}

pub(crate) fn check_path(path: &syn::LitStr, errors: &mut Errors) {
    let value = path.value();
    if !value.starts_with('/') {
        errors.push(syn::Error::new_spanned(
            path,
            format!(
                "route path must start with `/`, like \"/{}\"",
                value.trim_start_matches('/')
            ),
        ));
    }
    if value.chars().any(char::is_whitespace) {
        errors.push(syn::Error::new_spanned(
            path,
            "route path must not contain whitespace",
        ));
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

fn is_context(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| CONTEXT_TYPES.iter().any(|name| s.ident == name))
}

/// The argument's role, or why it cannot be one (and whether its type can still be named).
fn classify(ty: &Type) -> Result<Arg, (syn::Error, bool)> {
    match ty {
        Type::Reference(r) if is_context(&r.elem) => match &r.mutability {
            None => Ok(Arg::Context(ty.clone())),
            Some(m) => Err((
                syn::Error::new_spanned(
                    m,
                    format!(
                        "unsupported argument type `&mut {}`: take it by shared reference",
                        quote::ToTokens::to_token_stream(&r.elem)
                            .to_string()
                            .replace(' ', "")
                    ),
                ),
                true,
            )),
        },
        Type::Reference(r) => Err((
            syn::Error::new_spanned(
                r,
                "unsupported argument type: the payload is taken by value (an owned type that \
                 implements `Deserialize`); the only references allowed are `&Connection`, \
                 `&CallContext` and `&State<T>`",
            ),
            true,
        )),
        Type::ImplTrait(t) => Err((
            syn::Error::new_spanned(
                t,
                "unsupported argument type `impl Trait`: the payload must be a concrete type",
            ),
            false,
        )),
        Type::Infer(t) => Err((
            syn::Error::new_spanned(t, "the payload type must be written out"),
            false,
        )),
        t if is_context(t) => Ok(Arg::Context(t.clone())),
        t => Ok(Arg::Payload(t.clone())),
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
    let Some(seg) = last_segment(ty) else {
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
