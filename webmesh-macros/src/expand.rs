//! Expansion: quoting only. Every emitted item has its own generator method; protocol logic lives
//! in the `webmesh` crate, which the emitted code calls through absolute paths.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::ItemFn;

use crate::parse::RouteAttr;
use crate::validate::{self, Arg, Handler, Ret};

/// The attribute's entry point: never panics, always returns the user's function (so one
/// mistake does not cascade into errors wherever the function is used).
pub(crate) fn route(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(f)) => f,
        Ok(other) => {
            let e = syn::Error::new(
                item_span(&other),
                "`#[webmesh::route]` goes on a free function, like `async fn echo(msg: Msg) -> Msg`",
            );
            return with_errors(item, e);
        }
        Err(e) => return with_errors(item, e),
    };
    let checked = match RouteAttr::parse(attr) {
        Ok(attr) => validate::check(attr, func.clone()),
        Err(mut e) => {
            // Still report the function's own mistakes in the same pass.
            let placeholder = RouteAttr {
                path: syn::LitStr::new("/", Span::call_site()),
                krate: None,
                errors: None,
            };
            if let Err(more) = validate::check(placeholder, func.clone()) {
                e.combine(more);
            }
            Err(e)
        }
    };
    match checked {
        Ok(h) => Expansion::new(&h).into_token_stream(),
        Err(e) => with_errors(func.into_token_stream(), e),
    }
}

fn with_errors(item: TokenStream, e: syn::Error) -> TokenStream {
    let errors = e.to_compile_error();
    quote!(#item #errors)
}

fn item_span(item: &syn::Item) -> Span {
    match item {
        syn::Item::Struct(s) => s.struct_token.span,
        syn::Item::Enum(e) => e.enum_token.span,
        syn::Item::Impl(i) => i.impl_token.span,
        syn::Item::Mod(m) => m.mod_token.span,
        other => other.span(),
    }
}

/// The visibility, seen from one module deeper: items of the generated module are exactly as
/// visible as the function (a private fn's items are `pub(super)`), so private payload types work.
fn inner_vis(vis: &syn::Visibility) -> TokenStream {
    match vis {
        syn::Visibility::Public(_) => quote!(pub),
        syn::Visibility::Inherited => quote!(pub(super)),
        syn::Visibility::Restricted(r) => {
            let path = &r.path;
            let first = path
                .segments
                .first()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            match first.as_str() {
                "crate" if path.segments.len() == 1 => quote!(pub(crate)),
                "self" => {
                    let rest = path.segments.iter().skip(1);
                    quote!(pub(in super #(::#rest)*))
                }
                "super" => quote!(pub(in super::#path)),
                _ => quote!(#vis),
            }
        }
    }
}

struct Expansion<'a> {
    h: &'a Handler,
    vis: TokenStream,
    krate: &'a syn::Path,
    request: TokenStream,
    response: TokenStream,
    error: TokenStream,
}

impl<'a> Expansion<'a> {
    fn new(h: &'a Handler) -> Self {
        let krate = &h.krate;
        // Spanned at the user's types, so a type that is not Serialize/Deserialize is reported
        // where it is written.
        let request = match h.payload() {
            Some(t) => quote_spanned!(t.span()=> #t),
            None => quote!(()),
        };
        let (response, error) = match &h.ret {
            Ret::Unit => (quote!(()), quote!(#krate::NoError)),
            Ret::Value(t) => (quote_spanned!(t.span()=> #t), quote!(#krate::NoError)),
            Ret::Result(t, e) => (quote_spanned!(t.span()=> #t), quote_spanned!(e.span()=> #e)),
        };
        Expansion {
            h,
            vis: inner_vis(&h.func.vis),
            krate,
            request,
            response,
            error,
        }
    }

    fn func(&self) -> &ItemFn {
        &self.h.func
    }

    /// The user's function, unchanged, in the server half.
    fn original(&self) -> TokenStream {
        let krate = self.krate;
        let func = self.func();
        quote! {
            #krate::__server_half! {
                #func
            }
        }
    }

    /// `struct Route` and its `webmesh::Route` impl.
    fn route_type(&self) -> TokenStream {
        let Expansion {
            vis,
            krate,
            request,
            response,
            error,
            ..
        } = self;
        let path = &self.h.path;
        let name = &self.func().sig.ident;
        let doc = format!(
            "The route `{}` served by `{name}`: use it as `client.call::<{name}::Route>(..)`.",
            path.value()
        );
        quote! {
            #[doc = #doc]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
            #vis struct Route;

            impl #krate::Route for Route {
                const PATH: &'static str = #path;
                type Request = #request;
                type Response = #response;
                type Error = #error;
            }

            /// The route's path.
            #vis const PATH: &str = #path;
        }
    }

    /// `call` and `emit`: one-line wrappers over the client's generic methods.
    fn stubs(&self) -> TokenStream {
        let Expansion {
            vis,
            krate,
            request,
            response,
            error,
            ..
        } = self;
        let path = self.h.path.value();
        let call_doc = format!("Calls `{path}` and waits for its reply (the client's timeout applies).");
        let emit_doc = format!("Sends to `{path}` without waiting for a reply.");
        let (param, arg) = match self.h.payload() {
            Some(_) => (quote!(, request: #request), quote!(request)),
            None => (quote!(), quote!(())),
        };
        quote! {
            #[doc = #call_doc]
            #vis async fn call(client: &#krate::Client #param)
                -> ::core::result::Result<#response, #krate::CallError<#error>>
            {
                client.call::<Route>(#arg).await
            }

            #[doc = #emit_doc]
            #vis async fn emit(client: &#krate::Client #param) -> #krate::Result<()> {
                client.emit::<Route>(#arg).await
            }
        }
    }

    /// The `Serve` impl and the inventory registration, in the server half.
    fn server_half(&self) -> TokenStream {
        let Expansion {
            krate,
            request,
            response,
            error,
            ..
        } = self;
        let ident = &self.func().sig.ident;
        let args = self.h.args.iter().map(|a| match a {
            Arg::Payload(_) => quote!(request),
            Arg::ConnRef => quote!(call.connection()),
            Arg::ConnOwned => quote!(::core::clone::Clone::clone(call.connection())),
            Arg::CallRef => quote!(&call),
            Arg::CallOwned => quote!(::core::clone::Clone::clone(&call)),
        });
        let mut invoke = quote!(super::#ident(#(#args),*));
        if self.func().sig.asyncness.is_some() {
            invoke = quote!(#invoke.await);
        }
        let body = match &self.h.ret {
            Ret::Unit => quote! { #invoke; ::core::result::Result::Ok(()) },
            Ret::Value(_) => quote! { ::core::result::Result::Ok(#invoke) },
            Ret::Result(..) => invoke,
        };
        let unused = match self.h.payload() {
            Some(_) => quote!(),
            None => quote!(let () = request;),
        };
        let name = ident.to_string();
        quote! {
            #krate::__server_half! {
                impl #krate::Serve for Route {
                    fn serve(
                        request: #request,
                        call: #krate::CallContext,
                    ) -> impl ::core::future::Future<
                        Output = ::core::result::Result<#response, #error>,
                    > + ::core::marker::Send {
                        async move {
                            #unused
                            let _ = &call;
                            #body
                        }
                    }
                }

                #krate::__private::inventory::submit! {
                    #krate::__private::RouteEntry::new::<Route>(#name, ::core::module_path!())
                }
            }
        }
    }
}

impl ToTokens for Expansion<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let vis = &self.func().vis;
        let ident = &self.func().sig.ident;
        let path = self.h.path.value();
        let mod_doc = format!("Route `{path}`: its [`Route`](self::Route) type and typed client stubs.");
        let original = self.original();
        let route_type = self.route_type();
        let stubs = self.stubs();
        let server_half = self.server_half();
        tokens.extend(quote! {
            #original

            #[doc = #mod_doc]
            #[allow(non_snake_case, unused_imports, clippy::module_name_repetitions)]
            #vis mod #ident {
                use super::*;

                #route_type
                #stubs
                #server_half
            }
        });
    }
}
