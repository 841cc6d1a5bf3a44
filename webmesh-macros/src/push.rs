//! `#[webmesh::push("/path")]`: declares a type as the message a server pushes on a path, so that
//! server and client agree on it at compile time. Parse, validate, expand in one small file.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;

use crate::parse::RouteAttr;
use crate::validate::{check_path, Errors};

pub(crate) fn push(attr: TokenStream, item: TokenStream) -> TokenStream {
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
                "`#[webmesh::push]` goes on a struct or an enum, which the push impl needs to own: \
                 instead of a type alias, write `pub struct Name(pub T);`",
            ));
            return with(item, errors);
        }
        other => {
            errors.push(syn::Error::new(
                other.span(),
                "`#[webmesh::push]` goes on a struct or an enum: the message pushed on the path",
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
            "`server_feature` applies to routes; a push message is shared by both halves",
        ));
    }
    check_path(&attr.path, &mut errors);
    if !generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            generics,
            "a push message cannot be generic: the path carries one concrete type",
        ));
        return with(item, errors);
    }
    let krate = attr.krate.unwrap_or_else(|| syn::parse_quote!(::webmesh));
    let path = &attr.path;
    let tokens = quote! {
        #item

        impl #krate::Push for #ident {
            const PATH: &'static str = #path;
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
