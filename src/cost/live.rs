//! `cutover cost --live`: prices from the AWS Price List API (GetProducts, served from
//! us-east-1), cached under `.cutover/` with their date; on any failure, the bundled table.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_pricing::types::{Filter, FilterType};
use serde::{Deserialize, Serialize};

use super::{CostError, PriceSource, PriceTable};

/// The Price List API answers from this region only.
const PRICING_REGION: &str = "us-east-1";
/// Live prices younger than this are taken from the cache.
pub const CACHE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Serialize, Deserialize)]
struct Cache {
    fetched_at: String,
    table: PriceTable,
}

/// The price table of `region`: live (fetched or cached) when that works, bundled otherwise.
pub async fn prices(
    region: &str,
    cache_path: &Path,
) -> Result<(PriceTable, PriceSource), CostError> {
    let bundled = PriceTable::bundled(region)?;
    if let Some(cache) = read_cache(cache_path, region) {
        return Ok((
            cache.table,
            PriceSource::Live {
                fetched_at: cache.fetched_at,
                cached: true,
            },
        ));
    }
    match fetch(bundled.clone()).await {
        Ok(table) => {
            let fetched_at = crate::clock::now_rfc3339();
            let cache = Cache {
                fetched_at: fetched_at.clone(),
                table,
            };
            if let Ok(text) = serde_json::to_string_pretty(&cache) {
                let _ = std::fs::write(cache_path, text);
            }
            Ok((
                cache.table,
                PriceSource::Live {
                    fetched_at,
                    cached: false,
                },
            ))
        }
        Err(error) => {
            let read_on = bundled.read_on();
            Ok((
                bundled,
                PriceSource::BundledAfterLiveFailed { read_on, error },
            ))
        }
    }
}

/// Fresh cached live prices of `region`, if any: no network.
pub fn cached(region: &str, cache_path: &Path) -> Option<(PriceTable, PriceSource)> {
    read_cache(cache_path, region).map(|c| {
        (
            c.table,
            PriceSource::Live {
                fetched_at: c.fetched_at,
                cached: true,
            },
        )
    })
}

fn read_cache(path: &Path, region: &str) -> Option<Cache> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    if SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::MAX)
        > CACHE_MAX_AGE
    {
        return None;
    }
    let cache: Cache = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    (cache.table.region == region).then_some(cache)
}

/// Asks GetProducts for every price that has `live` filters. A product the API does not list
/// keeps its bundled price; a failed call fails the whole fetch.
async fn fetch(mut table: PriceTable) -> Result<PriceTable, String> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(PRICING_REGION))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await;
    let client = aws_sdk_pricing::Client::new(&config);
    let today = crate::clock::now_rfc3339()
        .get(..10)
        .unwrap_or_default()
        .to_string();
    let region = table.region.clone();
    for (id, price) in table.prices.iter_mut() {
        let Some(service) = price.live.get("service") else {
            continue;
        };
        let filter = |field: &str, value: &str| {
            Filter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
                .map_err(|e| format!("{id}: {e}"))
        };
        let mut request = client
            .get_products()
            .service_code(service)
            .max_results(1)
            .filters(filter("regionCode", &region)?);
        for (field, value) in price.live.iter().filter(|(k, _)| k.as_str() != "service") {
            request = request.filters(filter(field, value)?);
        }
        let output = tokio::time::timeout(CALL_TIMEOUT, request.send())
            .await
            .map_err(|_| {
                format!(
                    "GetProducts for {id} took longer than {}s",
                    CALL_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| {
                format!(
                    "GetProducts for {id}: {}",
                    aws_sdk_pricing::error::DisplayErrorContext(&e)
                )
            })?;
        let Some(product) = output.price_list().first() else {
            continue;
        };
        price.usd = on_demand_usd(product).map_err(|e| format!("{id}: {e}"))?;
        price.read_on = today.clone();
        price.source = format!("AWS Price List API, GetProducts {service}");
    }
    Ok(table)
}

/// The On-Demand price per unit of a Price List product (the first non-zero dimension, so a
/// free first tier does not read as a zero price).
pub fn on_demand_usd(product: &str) -> Result<f64, String> {
    let value: serde_json::Value =
        serde_json::from_str(product).map_err(|e| format!("not a price list product: {e}"))?;
    let terms = value
        .pointer("/terms/OnDemand")
        .and_then(|t| t.as_object())
        .ok_or("the product has no On-Demand terms")?;
    terms
        .values()
        .filter_map(|term| term.get("priceDimensions")?.as_object())
        .flat_map(|dims| dims.values())
        .filter_map(|dim| {
            dim.pointer("/pricePerUnit/USD")?
                .as_str()?
                .parse::<f64>()
                .ok()
        })
        .find(|usd| *usd > 0.0)
        .ok_or_else(|| "the product has no USD price".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_non_zero_on_demand_price() {
        let product = r#"{"product":{"sku":"X"},"terms":{"OnDemand":{"X.JRTCKXETXF":{"priceDimensions":{
            "X.1":{"unit":"GB","beginRange":"0","endRange":"5","pricePerUnit":{"USD":"0.0000000000"}},
            "X.2":{"unit":"GB","beginRange":"5","endRange":"Inf","pricePerUnit":{"USD":"0.5000000000"}}}}}}}"#;
        assert_eq!(on_demand_usd(product), Ok(0.5));
        assert!(on_demand_usd("{}").is_err());
        assert!(on_demand_usd("not json").is_err());
    }
}
