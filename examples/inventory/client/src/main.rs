//! Uses the inventory service through the contract's typed stubs: an async client that stocks
//! and takes items (typed errors, a typed push), and a blocking one, on a thread of its own, that
//! reads the report as plain synchronous code would.
//!
//! ```text
//! cargo run -p inventory-server &                        # in one terminal
//! cargo run -p inventory-client -- ws://127.0.0.1:4269   # in another
//! ```
//!
//! Built on its own (`cargo build -p inventory-client`), this binary compiles none of the
//! handler bodies and does not link the server's store: the contract's `server` feature is off.
#![allow(clippy::print_stdout)]

use inventory_contract::{add, report, stock, take, Line, LowStock, StockError};
use webmesh::{BlockingClient, CallError, Client};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:4269".into());
    let client = Client::builder()
        .on_push_message(|low: LowStock| println!("  push: only {} {} left", low.left, low.sku))
        .connect(&url)
        .await?;

    println!(
        "add 5 bolts -> {}",
        add::call(&client, Line::new("bolt", 5)).await?
    );
    println!("add 3 nuts -> {}", add::call(&client, Line::new("nut", 3)).await?);
    println!(
        "take 2 bolts -> {} left",
        take::call(&client, Line::new("bolt", 2)).await?
    );
    println!(
        "take 2 nuts -> {} left",
        take::call(&client, Line::new("nut", 2)).await?
    );
    match take::call(&client, Line::new("bolt", 10)).await {
        Err(CallError::Handler(StockError::Short { sku, left })) => {
            println!("take 10 bolts -> refused: only {left} {sku} left")
        }
        other => println!("take 10 bolts -> unexpected {other:?}"),
    }
    match stock::call(&client, "gear".into()).await {
        Err(CallError::Handler(e)) => println!("stock of gears -> {e}"),
        other => println!("stock of gears -> unexpected {other:?}"),
    }

    // Blocking code (a report job, a CLI) uses the same contract through `call_blocking`.
    let report_url = url.clone();
    let lines = tokio::task::spawn_blocking(move || -> Result<Vec<Line>, webmesh::Error> {
        let blocking = BlockingClient::connect(&report_url)?;
        let lines = report::call_blocking(&blocking)?;
        blocking.close();
        Ok(lines)
    })
    .await??;
    for line in lines {
        println!("report: {} x {}", line.qty, line.sku);
    }
    client.close().await;
    Ok(())
}
