"""A deterministic synthetic catalogue with real sequential structure.

Each user has a few favourite topics and a current topic that drifts among
them. Every item has a fixed successor (the item-to-item transition a
sequential model can learn: accessories after a purchase, the next episode).
At each step the user follows the current item's successor with probability
`follow_probability`; otherwise they pick a popular item of their current topic,
after possibly drifting to another favourite topic. A popularity ranking sees
none of this, so a model that beats it has learned sequence and user structure.
"""

from __future__ import annotations

import numpy as np

from recgpt_tf.errors import ConfigError


def synthetic_sequences(
    num_users: int = 2000,
    num_items: int = 500,
    num_topics: int = 20,
    min_length: int = 5,
    mean_length: float = 12.0,
    max_length: int = 60,
    follow_probability: float = 0.6,
    drift_probability: float = 0.15,
    topics_per_user: int = 3,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Generates `{user: [item, ...]}` with integer-string ids ("1".."num_items").

    Args:
        num_users: Users to generate.
        num_items: Catalogue size.
        num_topics: Latent interest clusters; items are spread evenly over them.
        min_length: Shortest sequence (at least 3, so every user is evaluated).
        mean_length: Mean sequence length (geometric tail above `min_length`).
        max_length: Longest sequence.
        follow_probability: Chance the next item is the current item's successor.
        drift_probability: Chance the user's current topic moves before a topic pick.
        topics_per_user: Favourite topics per user.
        seed: Everything is a deterministic function of this seed.

    Returns:
        An insertion-ordered dict from user id to item ids in time order.
    """
    if num_items < num_topics or num_topics < 1:
        raise ConfigError("num_topics", f"must be in 1..num_items; got {num_topics} topics for {num_items} items")
    if min_length < 3 or max_length < min_length or mean_length < min_length:
        raise ConfigError(
            "min_length", f"must satisfy 3 <= min_length <= mean_length, max_length; got {min_length}, {mean_length}, {max_length}"
        )
    rng = np.random.default_rng(seed)
    topic_of_item = _topics(rng, num_items, num_topics)
    members = [np.flatnonzero(topic_of_item == t) for t in range(num_topics)]
    # Zipf-like popularity inside each topic.
    weights = [1.0 / np.arange(1, len(m) + 1) ** 0.8 for m in members]
    weights = [w / w.sum() for w in weights]
    # Successors stay mostly inside the topic, so transitions and interests agree.
    successor = np.empty(num_items, dtype=np.int64)
    for m in members:
        successor[m] = rng.permutation(m)
    jump = rng.random(num_items) < 0.2
    successor[jump] = rng.integers(0, num_items, size=int(jump.sum()))

    sequences: dict[str, list[str]] = {}
    tail = 1.0 / max(mean_length - min_length + 1, 1.0)
    for user in range(1, num_users + 1):
        favourites = rng.choice(num_topics, size=min(topics_per_user, num_topics), replace=False)
        topic = favourites[0]
        length = int(min(max_length, min_length + rng.geometric(tail) - 1))
        item = rng.choice(members[topic], p=weights[topic])
        items = [item]
        while len(items) < length:
            if rng.random() < follow_probability:
                item = successor[item]
            else:
                if rng.random() < drift_probability:
                    topic = rng.choice(favourites)
                item = rng.choice(members[topic], p=weights[topic])
            items.append(item)
        sequences[str(user)] = [str(i + 1) for i in items]
    return sequences


def synthetic_item_topics(num_items: int = 500, num_topics: int = 20, seed: int = 0) -> dict[str, str]:
    """{item: topic} of `synthetic_sequences`' catalogue at the same arguments: the item features file its
    catalogue would have (one categorical column; topics "t0".."t{num_topics - 1}")."""
    topics = _topics(np.random.default_rng(seed), num_items, num_topics)
    return {str(i + 1): f"t{t}" for i, t in enumerate(topics)}


def _topics(rng: np.random.Generator, num_items: int, num_topics: int) -> np.ndarray:
    """Each item's topic, items spread evenly: the first draw of `synthetic_sequences`' generator."""
    return rng.permutation(np.arange(num_items) % num_topics)


def structured_sequences(
    num_users: int,
    num_items: int,
    num_topics: int,
    mean_length: float,
    seed: int,
    follow_probability: float = 0.6,
    drift_probability: float = 0.15,
    topics_per_user: int = 3,
    min_length: int = 5,
    max_length: int = 60,
) -> list[np.ndarray]:
    """`synthetic_sequences`' process vectorised over users, for catalogues of millions (the large-scale
    benchmarks). Item ids 1..num_items, as int32 arrays."""
    rng = np.random.default_rng(seed)
    per_topic = num_items // num_topics
    members = rng.permutation(num_topics * per_topic).reshape(num_topics, per_topic)  # topic → its items (0-based)
    topic_of = np.empty(num_topics * per_topic, np.int64)
    topic_of[members.reshape(-1)] = np.repeat(np.arange(num_topics), per_topic)
    popularity = np.cumsum(1.0 / np.arange(1, per_topic + 1) ** 0.8)
    popularity /= popularity[-1]  # one Zipf CDF over ranks, shared by every topic
    successor = np.empty(num_topics * per_topic, np.int64)
    for t in range(num_topics):
        successor[members[t]] = rng.permutation(members[t])
    jump = rng.random(len(successor)) < 0.2
    successor[jump] = rng.integers(0, len(successor), size=int(jump.sum()))

    favourites = np.stack([rng.choice(num_topics, topics_per_user, replace=False) for _ in range(num_users)])
    lengths = np.minimum(max_length, min_length + rng.geometric(1.0 / (mean_length - min_length + 1), num_users) - 1)
    topic = favourites[:, 0]
    item = members[topic, np.searchsorted(popularity, rng.random(num_users))]
    steps = np.zeros((num_users, int(lengths.max())), np.int64)
    steps[:, 0] = item
    for t in range(1, steps.shape[1]):
        follow = rng.random(num_users) < follow_probability
        drift = ~follow & (rng.random(num_users) < drift_probability)
        topic = np.where(drift, favourites[np.arange(num_users), rng.integers(0, topics_per_user, num_users)], topic)
        popular = members[topic, np.searchsorted(popularity, rng.random(num_users))]
        item = np.where(follow, successor[item], popular)
        topic = np.where(follow, topic_of[item], topic)
        steps[:, t] = item
    return [steps[u, : lengths[u]].astype(np.int32) + 1 for u in range(num_users)]
