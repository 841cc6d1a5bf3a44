//! Expansion: quoting only. Every emitted item has its own generator method; protocol logic lives
//! in the `webmesh` crate, which the emitted code calls through absolute paths.
//!
//! Beside the function, a module of the same name holds only what the macro defines (the marker
//! type, the path, the stubs), and names the route's types through the marker's `Route` impl.
//! That impl, the `Serve` impl and the registration sit next to the function, so every type of
//! the signature resolves exactly where the user wrote it: a payload type named `Route` or
//! `PATH` cannot be confused with a generated item.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::ItemFn;

use crate::parse::RouteAttr;
use crate::validate::{self, Arg, Errors, Handler, Ret};

/// The attribute's entry point: never panics, always returns the user's function. On a mistake
/// it still emits the route's client half where it can, so that uses of `name::call` or
/// `name::Route` elsewhere do not add a cascade of secondary errors.
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
    let mut errors = Errors::default();
    let attr = RouteAttr::parse(attr).unwrap_or_else(|e| {
        errors.push(e);
        RouteAttr::placeholder()
    });
    let handler = validate::check(attr, func, &mut errors);
    let expansion = Expansion::new(&handler);
    match errors.into_inner() {
        None => expansion.into_token_stream(),
        Some(e) => {
            let mut tokens = expansion.fallback();
            tokens.extend(e.to_compile_error());
            tokens
        }
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
    /// Visibility of the items inside the generated module.
    vis: TokenStream,
    krate: &'a syn::Path,
    /// `#[cfg(feature = "..")]` on the server half, or nothing.
    server_cfg: TokenStream,
}

impl<'a> Expansion<'a> {
    fn new(h: &'a Handler) -> Self {
        let server_cfg = match &h.server_feature {
            // Spanned at the literal: an undeclared feature is reported where it is written.
            Some(f) => quote_spanned!(f.span()=> #[cfg(feature = #f)]),
            None => quote!(),
        };
        Expansion {
            h,
            vis: inner_vis(&h.func.vis),
            krate: &h.krate,
            server_cfg,
        }
    }

    fn func(&self) -> &ItemFn {
        &self.h.func
    }

    fn ident(&self) -> &syn::Ident {
        &self.func().sig.ident
    }

    /// The user's function, unchanged, in the server half.
    fn original(&self) -> TokenStream {
        let cfg = &self.server_cfg;
        let func = self.func();
        quote!(#cfg #func)
    }

    /// The module beside the function: marker type, path and stubs.
    fn module(&self, with_stubs: bool) -> TokenStream {
        let vis = &self.func().vis;
        let ident = self.ident();
        let inner = &self.vis;
        let path = &self.h.path;
        let path_text = path.value();
        let docs = self.func().attrs.iter().filter(|a| a.path().is_ident("doc"));
        let see = format!("Route `{path_text}`: its [`Route`](self::Route) type and typed client stubs.");
        let route_doc = format!(
            "The route `{path_text}` served by `{ident}`: use it as `client.call::<{ident}::Route>(..)`."
        );
        let stubs = if with_stubs { self.stubs() } else { quote!() };
        quote! {
            #(#docs)*
            #[doc = ""]
            #[doc = #see]
            #[allow(non_snake_case, clippy::module_name_repetitions)]
            #vis mod #ident {
                #[doc = #route_doc]
                #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
                #inner struct Route;

                /// The route's path.
                #inner const PATH: &str = #path;

                #stubs
            }
        }
    }

    /// `call` and `emit`: one-line wrappers over the client's generic methods, typed through the
    /// marker's `Route` impl.
    fn stubs(&self) -> TokenStream {
        let Expansion { vis, krate, .. } = self;
        let path = self.h.path.value();
        let shown = |t: &dyn ToTokens| format!("`{}`", t.to_token_stream()).replace(" ", "");
        let request = self.h.payload().map(|t| shown(t));
        let call_doc = match &request {
            Some(r) => {
                format!("Calls `{path}` with a {r} and waits for its reply (the client's timeout applies).")
            }
            None => format!("Calls `{path}` and waits for its reply (the client's timeout applies)."),
        };
        let emit_doc = format!("Sends to `{path}` without waiting for a reply.");
        let call_blocking_doc = format!(
            "Calls `{path}` from code that is not async, and blocks until its reply (the client's timeout applies)."
        );
        let emit_blocking_doc =
            format!("Sends to `{path}` from code that is not async, without waiting for a reply.");
        let (param, arg) = match self.h.payload() {
            Some(_) => (
                quote!(, request: <Route as #krate::Route>::Request),
                quote!(request),
            ),
            None => (quote!(), quote!(())),
        };
        quote! {
            #[doc = #call_doc]
            #vis async fn call(client: &#krate::Client #param) -> ::core::result::Result<
                <Route as #krate::Route>::Response,
                #krate::CallError<<Route as #krate::Route>::Error>,
            > {
                client.call::<Route>(#arg).await
            }

            #[doc = #emit_doc]
            #vis async fn emit(client: &#krate::Client #param) -> #krate::Result<()> {
                client.emit::<Route>(#arg).await
            }

            #[doc = #call_blocking_doc]
            #vis fn call_blocking(client: &#krate::BlockingClient #param) -> ::core::result::Result<
                <Route as #krate::Route>::Response,
                #krate::CallError<<Route as #krate::Route>::Error>,
            > {
                client.call::<Route>(#arg)
            }

            #[doc = #emit_blocking_doc]
            #vis fn emit_blocking(client: &#krate::BlockingClient #param) -> #krate::Result<()> {
                client.emit::<Route>(#arg)
            }
        }
    }

    /// The marker's `webmesh::Route` impl, next to the function: the types resolve where the user
    /// wrote them. Spanned at the user's types, so a type that is not Serialize/Deserialize is
    /// reported where it is written.
    fn route_impl(&self) -> TokenStream {
        let krate = self.krate;
        let ident = self.ident();
        let path = &self.h.path;
        let request = match self.h.payload() {
            Some(t) => quote_spanned!(t.span()=> #t),
            None => quote!(()),
        };
        let (response, error) = match &self.h.ret {
            Ret::Unit => (quote!(()), quote!(#krate::NoError)),
            Ret::Value(t) => (quote_spanned!(t.span()=> #t), quote!(#krate::NoError)),
            Ret::Result(t, e) => (quote_spanned!(t.span()=> #t), quote_spanned!(e.span()=> #e)),
        };
        quote! {
            impl #krate::Route for #ident::Route {
                const PATH: &'static str = #path;
                type Request = #request;
                type Response = #response;
                type Error = #error;
            }
        }
    }

    /// The `Serve` impl and the inventory registration, in the server half.
    fn server_half(&self) -> TokenStream {
        let Expansion {
            krate, server_cfg, ..
        } = self;
        let ident = self.ident();
        // These bindings share a scope with the user's items (a unit struct named `call` would
        // capture a plain `call` pattern): names nobody writes.
        let call = format_ident!("__webmesh_call");
        let request = format_ident!("__webmesh_request");
        let args = self.h.args.iter().map(|a| match a {
            Arg::Payload(_) => quote!(#request),
            // Checked by the compiler: a type only *named* like a context type fails here.
            Arg::Context(t) => quote_spanned! {t.span()=>
                <#t as #krate::__private::FromCall<'_>>::from_call(&#call)
            },
        });
        let is_async = self.func().sig.asyncness.is_some();
        let mut invoke = quote!(#ident(#(#args),*));
        if is_async {
            invoke = quote!(#invoke.await);
        }
        let body = match &self.h.ret {
            Ret::Unit => quote! { #invoke; ::core::result::Result::Ok(()) },
            Ret::Value(_) => quote! { ::core::result::Result::Ok(#invoke) },
            Ret::Result(..) => invoke,
        };
        let unused = match self.h.payload() {
            Some(_) => quote!(),
            None => quote!(let () = #request;),
        };
        // A plain `fn` is also served without a future: the server calls it as it dispatches
        // the request, and makes its context only if it takes one.
        let serve_now = (!is_async).then(|| {
            let context = format_ident!("__webmesh_context");
            let now = format_ident!("__webmesh_now");
            let takes_context = self.h.args.iter().any(|a| matches!(a, Arg::Context(_)));
            let make_call = if takes_context {
                quote!(let #call: #krate::CallContext = #context();)
            } else {
                quote!(let _ = #context;)
            };
            quote! {
                fn serve_now() -> ::core::option::Option<#krate::__private::ServeNow<
                    <Self as #krate::Route>::Request,
                    <Self as #krate::Route>::Response,
                    <Self as #krate::Route>::Error,
                >> {
                    let #now: #krate::__private::ServeNow<
                        <Self as #krate::Route>::Request,
                        <Self as #krate::Route>::Response,
                        <Self as #krate::Route>::Error,
                    > = |#request, #context| {
                        #unused
                        #make_call
                        #body
                    };
                    ::core::option::Option::Some(#now)
                }
            }
        });
        let out = format_ident!("__webmesh_out");
        let requires = self.h.args.iter().filter_map(|a| match a {
            Arg::Context(t) => Some(quote_spanned! {t.span()=>
                <#t as #krate::__private::FromCall<'static>>::require(#out);
            }),
            Arg::Payload(_) => None,
        });
        let name = ident.to_string();
        let doc = doc_text(&self.func().attrs);
        let probe = |t: TokenStream| {
            quote! {
                (&#krate::__private::Probe::<<#ident::Route as #krate::Route>::#t>::new()).schema()
            }
        };
        let (req, resp, err) = (
            probe(quote!(Request)),
            probe(quote!(Response)),
            probe(quote!(Error)),
        );
        quote! {
            #server_cfg
            impl #krate::Serve for #ident::Route {
                fn serve(
                    #request: <Self as #krate::Route>::Request,
                    #call: #krate::CallContext,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<
                        <Self as #krate::Route>::Response,
                        <Self as #krate::Route>::Error,
                    >,
                > + ::core::marker::Send {
                    async move {
                        #unused
                        let _ = &#call;
                        #body
                    }
                }

                fn required_state(#out: &mut ::std::vec::Vec<#krate::__private::StateKey>) {
                    let _ = &#out;
                    #(#requires)*
                }

                #serve_now
            }

            #server_cfg
            #krate::__private::inventory::submit! {
                #krate::__private::RouteEntry::new::<#ident::Route>(
                    #name,
                    ::core::module_path!(),
                    #doc,
                    || {
                        #[allow(unused_imports)]
                        use #krate::__private::{Derived as _, NotDerived as _};
                        // The borrow picks the trait: not needless.
                        #[allow(clippy::needless_borrow)]
                        let schemas = [#req, #resp, #err];
                        schemas
                    },
                )
            }
        }
    }

    /// What is emitted beside the errors of a handler with a mistake: the function, and its
    /// client half when its types can be named (else the module alone).
    fn fallback(&self) -> TokenStream {
        let original = self.original();
        let in_impl = self.func().sig.receiver().is_some();
        if in_impl {
            // A method: nothing can be emitted beside it inside an `impl`.
            original
        } else if self.h.types_ok {
            let module = self.module(true);
            let route_impl = self.route_impl();
            quote!(#original #module #route_impl)
        } else {
            let module = self.module(false);
            quote!(#original #module)
        }
    }
}

impl ToTokens for Expansion<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(self.original());
        tokens.extend(self.module(true));
        tokens.extend(self.route_impl());
        tokens.extend(self.server_half());
    }
}

/// The text of the `#[doc = ".."]` attributes (doc comments), one line each.
pub(crate) fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                let v = s.value();
                lines.push(v.strip_prefix(' ').map(str::to_owned).unwrap_or(v));
            }
        }
    }
    lines.join("\n")
}
