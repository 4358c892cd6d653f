"""Tasks of the ingestion half of a rebuild: source, captions, vocabulary, embeddings, images.

Each task is a thin wrapper over one `colorfeat` stage function; results are the stages' small
JSON dicts (paths, hashes, counts), never arrays.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.tasks import exponential_backoff

from colorfeat import captions, embeddings, images, sources, vocab
from flows.caching import stage_task
from flows.retry import retry_if_transient


@task(
    name="acquire",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_transient,
)
def acquire_source(source: str, work_dir: str, limit: int | None, seed: int) -> dict:
    """Download (resumably), verify and extract the source, or generate it; name its content."""
    return sources.acquire(source, Path(work_dir), limit=limit, seed=seed)


@stage_task("captions", task_run_name="{out_dir.name}")
def keep_colour_captions(out_dir: Path, source: dict, lexicon: str, limit: int | None) -> dict:
    """Keep the captions that name a colour of the lexicon, per image and store split."""
    return captions.captions_stage(source, lexicon, out_dir, limit=limit)


@stage_task("vocab", task_run_name="{out_dir.name}")
def build_vocab(out_dir: Path, kept_captions: dict, min_count: int) -> dict:
    """The vocabulary of the train captions, specials first."""
    return vocab.vocab_stage(kept_captions, out_dir, min_count=min_count)


@stage_task("embeddings", task_run_name="{out_dir.name}")
def embed_words(
    out_dir: Path, kept_captions: dict, vocabulary: dict, spec: str, dim: int, seed: int
) -> dict:
    """Word vectors of the vocabulary: a seeded word2vec fit, or a word2vec-format file."""
    return embeddings.embeddings_stage(
        kept_captions, vocabulary, out_dir, spec=spec, dim=dim, seed=seed
    )


@stage_task(
    "images",
    task_run_name="{out_dir.name}",
    retries=2,  # a storage fault fails the stage with nothing recorded; a retry resumes it
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_condition_fn=retry_if_transient,
)
def prepare_images(
    out_dir: Path,
    source: dict,
    kept_captions: dict,
    vocabulary: dict,
    image_size: int,
    max_len: int,
    workers: int,
    dask_address: str | None,
) -> dict:
    """Decode, resize and quantise every kept image; tokenise its captions (on Dask if asked)."""
    return images.images_stage(
        source,
        kept_captions,
        vocabulary,
        out_dir,
        image_size=image_size,
        max_len=max_len,
        workers=workers,
        dask_address=dask_address,
    )
