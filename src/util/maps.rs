//! Giving a hash map's memory back after a burst.

use std::collections::HashMap;
use std::hash::Hash;

/// Gives a map's memory back once a burst is over: a `HashMap` keeps its
/// largest capacity forever, so 1,000 clients once would cost their table
/// space for the life of the process. Only a map under a quarter full is
/// rebuilt (to half full), so under churn the cost stays amortized.
pub fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    const FLOOR: usize = 64;
    if map.capacity() > FLOOR && map.len() < map.capacity() / 4 {
        map.shrink_to((map.len() * 2).max(FLOOR));
    }
}
