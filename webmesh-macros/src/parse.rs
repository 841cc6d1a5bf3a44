//! Parsing: the attribute's arguments, into a plain struct.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

/// Attribute keys besides the path, and what each takes.
const KEYS: &[(&str, &str)] = &[
    (
        "server_feature",
        "the name of a feature of this crate, as `server_feature = \"server\"`",
    ),
    (
        "crate",
        "the path of the webmesh crate, as `crate = \"my::webmesh\"`",
    ),
];

/// `#[webmesh::route("/path", key = value, ..)]`.
pub(crate) struct RouteAttr {
    pub(crate) path: LitStr,
    /// `server_feature = "name"`: the server half (the function, its `Serve` impl and its
    /// registration) is compiled only with this feature of the crate that defines the route.
    pub(crate) server_feature: Option<LitStr>,
    /// `crate = path`: where the webmesh crate is, when renamed or re-exported.
    pub(crate) krate: Option<syn::Path>,
    /// Mistakes in the keys after the path, reported with the function's own.
    pub(crate) errors: Option<syn::Error>,
}

impl RouteAttr {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        if tokens.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "missing route path: expected `#[webmesh::route(\"/path\")]`",
            ));
        }
        syn::parse2(tokens)
    }

    /// Stands in for an attribute that did not parse, so the function's own mistakes are still
    /// reported and the client half still expands.
    pub(crate) fn placeholder() -> Self {
        RouteAttr {
            path: LitStr::new("/", Span::call_site()),
            server_feature: None,
            krate: None,
            errors: None,
        }
    }
}

impl Parse for RouteAttr {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let path = match input.parse::<Lit>() {
            Ok(Lit::Str(s)) => s,
            Ok(other) => return Err(syn::Error::new_spanned(other, PATH_NOT_A_STRING)),
            Err(_) => {
                let tt: proc_macro2::TokenTree = input.parse()?;
                return Err(syn::Error::new_spanned(tt, PATH_NOT_A_STRING));
            }
        };
        let mut attr = RouteAttr {
            path,
            ..RouteAttr::placeholder()
        };
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
            let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
            for meta in metas {
                if let Err(e) = attr.apply(&meta) {
                    match &mut attr.errors {
                        Some(all) => all.combine(e),
                        None => attr.errors = Some(e),
                    }
                }
            }
        }
        Ok(attr)
    }
}

const PATH_NOT_A_STRING: &str =
    "the route path must be a string literal, like `#[webmesh::route(\"/echo\")]`";

impl RouteAttr {
    fn apply(&mut self, meta: &Meta) -> syn::Result<()> {
        let key = meta.path();
        let name = key.get_ident().map(ToString::to_string).unwrap_or_default();
        let Some((known, _)) = KEYS.iter().find(|(k, _)| *k == name) else {
            let allowed: Vec<String> = KEYS.iter().map(|(k, _)| format!("`{k}`")).collect();
            let shown = quote::ToTokens::to_token_stream(key).to_string().replace(' ', "");
            return Err(syn::Error::new_spanned(
                key,
                format!(
                    "unknown attribute `{shown}`; expected one of: {}",
                    allowed.join(", ")
                ),
            ));
        };
        let Meta::NameValue(nv) = meta else {
            return Err(syn::Error::new_spanned(meta, expected(known)));
        };
        let twice = || syn::Error::new_spanned(key, format!("`{known}` is given twice"));
        match *known {
            "crate" => {
                if self.krate.is_some() {
                    return Err(twice());
                }
                self.krate = Some(match &nv.value {
                    Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => s.parse()?,
                    Expr::Path(p) => p.path.clone(),
                    other => return Err(syn::Error::new_spanned(other, expected(known))),
                });
            }
            _ => {
                if self.server_feature.is_some() {
                    return Err(twice());
                }
                match &nv.value {
                    Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) if !s.value().is_empty() => {
                        self.server_feature = Some(s.clone());
                    }
                    other => return Err(syn::Error::new_spanned(other, expected(known))),
                }
            }
        }
        Ok(())
    }
}

fn expected(key: &str) -> String {
    let what = KEYS.iter().find(|(k, _)| *k == key).map_or("a value", |(_, w)| w);
    format!("expected {what}")
}
