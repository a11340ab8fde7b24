//! Price tables: bundled per region (assets/pricing/), or refreshed from the AWS Price List API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CostError;

/// Regions with a bundled table, and the table's text.
const BUNDLED: &[(&str, &str)] = &[(
    "us-east-1",
    include_str!("../../assets/pricing/us-east-1.toml"),
)];

/// One price with where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub usd: f64,
    pub unit: String,
    pub source: String,
    pub read_on: String,
    /// Price List API filters: `service` is the ServiceCode, the rest are TERM_MATCH fields.
    #[serde(default)]
    pub live: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeTier {
    pub logs_gb: f64,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotDiscount {
    pub discount_min: f64,
    pub discount_max: f64,
    pub source: String,
    pub read_on: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HerokuPrices {
    pub source: String,
    pub read_on: String,
    /// Monthly price per dyno type.
    pub dynos: BTreeMap<String, f64>,
    /// Monthly price per Postgres plan.
    pub postgres: BTreeMap<String, f64>,
}

/// Where the prices in use came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PriceSource {
    Bundled {
        read_on: String,
    },
    Live {
        fetched_at: String,
        cached: bool,
    },
    /// `--live` was asked for and failed: the bundled table is in use.
    BundledAfterLiveFailed {
        read_on: String,
        error: String,
    },
}

impl PriceSource {
    pub fn describe(&self) -> String {
        match self {
            PriceSource::Bundled { read_on } => format!("bundled list prices (read {read_on})"),
            PriceSource::Live {
                fetched_at,
                cached: false,
            } => format!("AWS Price List API, fetched {fetched_at}"),
            PriceSource::Live {
                fetched_at,
                cached: true,
            } => {
                format!("AWS Price List API, cached from {fetched_at}")
            }
            PriceSource::BundledAfterLiveFailed { read_on, error } => {
                format!("bundled list prices (read {read_on}): live prices failed: {error}")
            }
        }
    }
}

/// All prices of one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub region: String,
    pub location: String,
    pub currency: String,
    pub hours_per_month: f64,
    pub prices: BTreeMap<String, Price>,
    pub free_tier: FreeTier,
    pub fargate_spot: SpotDiscount,
    pub heroku: HerokuPrices,
}

impl PriceTable {
    /// The bundled table of a region; an unknown region lists the known ones.
    pub fn bundled(region: &str) -> Result<PriceTable, CostError> {
        let Some((_, text)) = BUNDLED.iter().find(|(r, _)| *r == region) else {
            return Err(CostError::UnknownRegion {
                region: region.to_string(),
                known: known_regions().join(", "),
            });
        };
        toml::from_str(text).map_err(|e| CostError::BadTable(format!("{region}: {e}")))
    }

    pub fn usd(&self, id: &str) -> Option<f64> {
        self.prices.get(id).map(|p| p.usd)
    }

    /// The date the oldest price was read.
    pub fn read_on(&self) -> String {
        self.prices
            .values()
            .map(|p| p.read_on.clone())
            .min()
            .unwrap_or_default()
    }
}

pub fn known_regions() -> Vec<&'static str> {
    BUNDLED.iter().map(|(r, _)| *r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_price_names_its_source_and_date() {
        for region in known_regions() {
            let table = PriceTable::bundled(region).unwrap_or_else(|e| panic!("{e}"));
            assert!(table.prices.len() >= 20, "{region}");
            for (id, price) in &table.prices {
                assert!(price.usd > 0.0, "{id}");
                assert!(
                    price.source.starts_with("https://"),
                    "{id}: {}",
                    price.source
                );
                assert_eq!(price.read_on.len(), 10, "{id}");
            }
        }
        let e = PriceTable::bundled("mars-north-1").unwrap_err().to_string();
        assert!(e.contains("mars-north-1") && e.contains("us-east-1"), "{e}");
    }
}
