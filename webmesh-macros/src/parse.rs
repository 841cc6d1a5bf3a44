//! Parsing: the attribute's arguments and the annotated item, into plain structs.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

/// Attribute keys besides the path, and what each takes.
const KEYS: &[(&str, &str)] = &[(
    "crate",
    "the path of the webmesh crate, as `crate = \"my::webmesh\"`",
)];

/// `#[webmesh::route("/path", key = value, ..)]`.
pub(crate) struct RouteAttr {
    pub(crate) path: LitStr,
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
}

impl Parse for RouteAttr {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let path = match input.parse::<Lit>() {
            Ok(Lit::Str(s)) => s,
            Ok(other) => {
                return Err(syn::Error::new_spanned(
                    other,
                    "the route path must be a string literal, like `#[webmesh::route(\"/echo\")]`",
                ))
            }
            Err(_) => {
                let tt: proc_macro2::TokenTree = input.parse()?;
                return Err(syn::Error::new_spanned(
                    tt,
                    "the route path must be a string literal, like `#[webmesh::route(\"/echo\")]`",
                ));
            }
        };
        let mut krate = None;
        let mut errors: Option<syn::Error> = None;
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
            let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
            for meta in metas {
                if let Err(e) = apply(&meta, &mut krate) {
                    match &mut errors {
                        Some(all) => all.combine(e),
                        None => errors = Some(e),
                    }
                }
            }
        }
        Ok(RouteAttr { path, krate, errors })
    }
}

fn apply(meta: &Meta, krate: &mut Option<syn::Path>) -> syn::Result<()> {
    let key = meta.path();
    let name = key.get_ident().map(ToString::to_string).unwrap_or_default();
    match (name.as_str(), meta) {
        ("crate", _) if krate.is_some() => Err(syn::Error::new_spanned(key, "`crate` is given twice")),
        ("crate", Meta::NameValue(nv)) => {
            *krate = Some(match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => s.parse()?,
                Expr::Path(p) => p.path.clone(),
                other => return Err(syn::Error::new_spanned(other, expected("crate"))),
            });
            Ok(())
        }
        ("crate", other) => Err(syn::Error::new_spanned(other, expected("crate"))),
        _ => {
            let allowed: Vec<String> = KEYS.iter().map(|(k, _)| format!("`{k}`")).collect();
            let shown = quote::ToTokens::to_token_stream(key).to_string().replace(' ', "");
            Err(syn::Error::new_spanned(
                key,
                format!(
                    "unknown attribute `{shown}`; expected one of: {}",
                    allowed.join(", ")
                ),
            ))
        }
    }
}

fn expected(key: &str) -> String {
    let what = KEYS.iter().find(|(k, _)| *k == key).map_or("a value", |(_, w)| w);
    format!("expected {what}")
}
