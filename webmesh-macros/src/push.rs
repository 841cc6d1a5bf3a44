//! `#[webmesh::push("/path")]` and `#[webmesh::topic("/path")]`: declare a type as the message a
//! server pushes on a path, or the messages of a topic, so that server and client agree on it at
//! compile time. Parse, validate, expand in one small file.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;

use crate::parse::RouteAttr;
use crate::validate::{check_path, Errors};

/// What is declared: the runtime trait implemented, and how its path is named in messages.
#[derive(Clone, Copy)]
pub(crate) enum Declared {
    Push,
    Topic,
}

impl Declared {
    fn attribute(self) -> &'static str {
        match self {
            Declared::Push => "#[webmesh::push]",
            Declared::Topic => "#[webmesh::topic]",
        }
    }
}

pub(crate) fn push(attr: TokenStream, item: TokenStream) -> TokenStream {
    declare(attr, item, Declared::Push)
}

pub(crate) fn topic(attr: TokenStream, item: TokenStream) -> TokenStream {
    declare(attr, item, Declared::Topic)
}

fn declare(attr: TokenStream, item: TokenStream, what: Declared) -> TokenStream {
    let mut errors = Errors::default();
    let attr = RouteAttr::parse(attr).unwrap_or_else(|e| {
        errors.push(e);
        RouteAttr::placeholder()
    });
    let item: syn::Item = match syn::parse2(item.clone()) {
        Ok(i) => i,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#item #e);
        }
    };
    let (ident, generics) = match &item {
        syn::Item::Struct(s) => (&s.ident, &s.generics),
        syn::Item::Enum(e) => (&e.ident, &e.generics),
        syn::Item::Type(t) => {
            errors.push(syn::Error::new(
                t.type_token.span,
                format!(
                    "`{}` goes on a struct or an enum, which the impl needs to own: instead of a \
                     type alias, write `pub struct Name(pub T);`",
                    what.attribute()
                ),
            ));
            return with(item, errors);
        }
        other => {
            errors.push(syn::Error::new(
                other.span(),
                format!(
                    "`{}` goes on a struct or an enum: the message type",
                    what.attribute()
                ),
            ));
            return with(item, errors);
        }
    };
    if let Some(e) = attr.errors {
        errors.push(e);
    }
    if let Some(f) = &attr.server_feature {
        errors.push(syn::Error::new_spanned(
            f,
            "`server_feature` applies to routes; a message type is shared by both halves",
        ));
    }
    check_path(&attr.path, &mut errors);
    let value = attr.path.value();
    match what {
        Declared::Topic if value.split('/').any(|s| s.contains('*') && s != "*") => {
            errors.push(syn::Error::new_spanned(
                &attr.path,
                "a `*` stands for one whole path segment, as in \"/prices/*\"",
            ));
        }
        Declared::Push if value.contains('*') => {
            errors.push(syn::Error::new_spanned(
                &attr.path,
                "a push goes to one path: patterns with `*` are for topics (`#[webmesh::topic]`)",
            ));
        }
        _ => {}
    }
    if !generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            generics,
            "a message type cannot be generic: the path carries one concrete type",
        ));
        return with(item, errors);
    }
    let krate = attr.krate.unwrap_or_else(|| syn::parse_quote!(::webmesh));
    let path = &attr.path;
    let tokens = match what {
        Declared::Push => quote! {
            #item

            impl #krate::Push for #ident {
                const PATH: &'static str = #path;
            }
        },
        Declared::Topic => {
            let doc = crate::expand::doc_text(item_attrs(&item));
            let name = ident.to_string();
            quote! {
                #item

                impl #krate::Topic for #ident {
                    const PATH: &'static str = #path;
                }

                #krate::__private::inventory::submit! {
                    #krate::__private::TopicEntry::new(
                        #path,
                        ::core::concat!(::core::module_path!(), "::", #name),
                        #doc,
                        || {
                            #[allow(unused_imports)]
                            use #krate::__private::{Derived as _, NotDerived as _};
                            #[allow(clippy::needless_borrow)]
                            let schema = (&#krate::__private::Probe::<#ident>::new()).schema();
                            schema
                        },
                    )
                }
            }
        }
    };
    match errors.into_inner() {
        None => tokens,
        Some(e) => {
            let e = e.to_compile_error();
            quote!(#tokens #e)
        }
    }
}

fn with(item: syn::Item, errors: Errors) -> TokenStream {
    let e = errors.into_inner().map(|e| e.to_compile_error());
    quote!(#item #e)
}

/// The attributes of a struct or an enum (the only items that get this far).
fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Struct(s) => &s.attrs,
        syn::Item::Enum(e) => &e.attrs,
        _ => &[],
    }
}
