"""One dataclass per stage. Defaults follow the official GAGS release (its train.py, preprocess.py and SAM settings,
cited field by field); the CLI is generated from these.

Every constant a stage uses has a name here, with where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro
from tyro.conf import Positional

from gags.methods import BaselineName, MethodName


@dataclass
class SynthConfig:
    """Write a procedural benchmark scene with exact ground truth (images, poses, depth, ids, labels)."""

    out: Path
    """Folder to write the scene into."""
    preset: str = "ramen"
    """Scene preset: ramen, teatime, figurines, kitchen, or random."""
    seed: int = 0
    """Seed of every random choice (objects, colours, cameras)."""
    resolution: int = 256
    """Image width and height in pixels (<= 512)."""
    views: int = 40
    """Number of training views; held-out views are added on top (one for every 8 training views)."""
    supersample: int = 2
    """Anti-aliasing samples per pixel side (1..4)."""
    label_every: int = 5
    """Besides every held-out view, every N-th training view gets LERF-OVS labels."""
    points: int = 20_000
    """Surface samples (with colour) in points3d.ply, the initial point cloud."""


@dataclass
class ReconstructConfig:
    """Train RGB 3D Gaussians from posed images (3DGS recipe) and write them into OUT as a 3DGS PLY."""

    scene: Positional[Path | None] = None
    """Scene folder: a COLMAP model (sparse/0), a transforms.json, or a synthetic scene. Omit with --images."""
    out: Path = Path("out")
    """Scene output folder (OUT)."""
    images: Path | None = None
    """A folder of bare photos: structure-from-motion (pycolmap) runs first and writes a COLMAP model into OUT."""
    init_ply: Path | None = None
    """Start from this 3DGS .ply instead of the scene's points."""
    images_dir: str | None = None
    """Image folder inside a COLMAP scene (e.g. images_8); default: the first of images, images_2, images_4,
    images_8."""
    strict: bool = False
    """Refuse a transforms.json that lists frames whose image is missing (default: skip them with a warning)."""
    downscale: int = 1
    """Train on images downscaled by this integer factor."""
    iterations: int | None = None
    """Training iterations; default 30000 (3DGS) with CUDA, 7000 on a CPU (3DGS's first evaluation point)."""
    test_every: int = 8
    """Hold out every N-th image for testing (LLFF convention)."""
    seed: int = 42
    """Seed of initialisation and view order."""
    sh_degree: int = 3
    """Maximum spherical-harmonics degree; one degree is added every --sh-degree-interval iterations."""
    sh_degree_interval: int = 1000
    """Iterations between two SH degree increases (3DGS: 1000)."""
    ssim_lambda: float = 0.2
    """Weight of D-SSIM in the loss (3DGS: 0.2)."""
    checkpoint_every: int = 1000
    """Write a resumable checkpoint every N iterations."""
    resume: bool = True
    """Continue from the stage's checkpoint in OUT if there is one."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    """Rasterizer backend: gsplat when CUDA is available, else the pure PyTorch one."""
    random_init_points: int = 20_000
    """Gaussians placed at random in the camera frustums when the scene has no points (gsplat: 100,000)."""
    eval_at: tuple[int, ...] = ()
    """Also evaluate the held-out views after these iteration counts (metrics.json "history")."""
    max_gaussians: int | None = None
    """Ceiling on the Gaussians densification may reach; default none with CUDA, on a CPU one per pixel of a training
    image (time per iteration grows with them); 0 = none."""
    threads: int = 0
    """PyTorch threads (0: PyTorch's default, one per core)."""


@dataclass
class SegmentConfig:
    """Granularity-aware segmentation (GaS): prompt points, 3-level masks and CLIP features per image."""

    out: Positional[Path]
    """Scene output folder (OUT) where `gags reconstruct` ran."""
    segmenter: str = "hierarchy"
    """hierarchy (embedded) | tinysam (embedded, SAM's architecture) | sam:vit_h:/path/sam_vit_h_4b8939.pth |
    sam2:sam2.1_hiera_large:/path.pt | exact, oracle (a scene made by gags synth: its own entities as segments, or a
    perfect promptable segmenter through the stage's prompts and filters)"""
    encoder: str = "tiny"
    """tiny (embedded) | openclip:ViT-B-16:/path/open_clip_pytorch_model.bin | openclip:local-dir:/path/dir"""
    prompts: Literal["gags", "paper", "uniform"] = "gags"
    """gags: the official release's depth ratio; paper: Eq. 1's inverse ratio; uniform: LangSplat's 32x32 grid."""
    workers: int = 1
    """Images processed in parallel (each worker holds its own segmenter and encoder)."""
    parallel: Literal["process", "thread"] = "thread"
    """With --workers > 1: threads sharing this process (the faster of the two on few cores) or worker processes."""
    threads: int = 0
    """PyTorch threads per worker (0: CPU cores / workers); 1 is faster when other jobs share the CPU."""
    ray: str | None = None
    """Segment on a Ray cluster (pip install "gags[ray]"): local (start one here) | auto (the cluster Ray finds) |
    HOST:PORT of a head. One actor per worker slot loads the models once; OUT must be on storage every node sees."""
    ray_workers: int = 0
    """With --ray: actors (0: as many as the cluster's CPUs and GPUs fit, at most one per image)."""
    ray_cpus_per_worker: float = 1.0
    """With --ray: CPU cores each actor reserves (its PyTorch threads unless --threads says otherwise)."""
    ray_gpus_per_worker: float = 0.0
    """With --ray: GPUs each actor reserves (fractions share one GPU); models then run on CUDA."""
    seed: int = 42
    """Seed of prompt sampling (official release: 42); view k draws with seed + k."""
    max_height: int = 1080
    """Images taller than this are segmented resized to this height (LangSplat/GAGS preprocess.py: 1080); 0 = never."""
    overwrite: bool = False
    """Delete this stage's outputs (the language features, prompts and segment records of OUT) and start over."""
    features: Path | None = None
    """An existing folder of LangSplat features (_f.npy / _s.npy): validated, copied into OUT and used instead of
    segmenting."""
    visibility_rel_tol: float = 0.25
    """A Gaussian centre is visible in a view when |D - z| <= 0.25 D (release depth_SAM.py: visibility_threshold)."""
    patch_grid: int = 8
    """Prompt patches per side (release preprocess.py: n_per_side=8)."""
    points_per_ratio: int = 4
    """Points per side per unit depth ratio r (release: nsample_min_distance=4)."""
    max_points_per_side: int = 20
    """Upper clip of points per side in a patch (release SAM_utils.py)."""
    sub_patch_grid: int = 10
    """Sub-patches per side for the weighted draw inside a patch (release SAM_utils.py: crop_num=10)."""
    uniform_points_per_side: int = 32
    """Grid of --prompts uniform (LangSplat: points_per_side=32)."""
    pred_iou_thresh: float = 0.7
    """Keep masks with predicted IoU > this (release: pred_iou_thresh=0.7)."""
    stability_thresh: float = 0.85
    """Keep masks with stability >= this (release: stability_score_thresh=0.85)."""
    box_nms_thresh: float = 0.7
    """Box NMS IoU (release: box_nms_thresh=0.7)."""
    min_region_area: int | None = None
    """Fill holes and remove islands below this many pixels of the segmented image. Default: the release's
    min_mask_region_area=100, which counts pixels of SAM-scale frames (1024 px long side), scaled to the image:
    round(100 x (long side / 1024)^2), 2 px at 128 x 128 (gags.segment.masks.min_region_area_for)."""
    mask_nms_iou: float = 0.8
    """LangSplat mask NMS: IoU threshold (masks_update iou_thr=0.8)."""
    mask_nms_score: float = 0.7
    """LangSplat mask NMS: score (stability x predicted IoU) threshold (score_thr=0.7)."""
    mask_nms_inner: float = 0.5
    """LangSplat mask NMS: inner-overlap threshold (inner_thr=0.5)."""
    paint_order: Literal["area", "given"] = "area"
    """Segment maps: area paints larger masks first, smaller over them; given paints in list order (LangSplat)."""


@dataclass
class DistillConfig:
    """Granularity-aware distillation (GaD) of the CLIP features into one language field, or a baseline.

    Default schedule: on a GPU the official one, a zero start and 30,000 iterations at half resolution with the
    region-aware loss. On a CPU a start from the lifted features (--init lift), then 200 iterations of the same shape
    (late phase from the midpoint) at full resolution up to a longer side of 128 pixels (downscale = max(1, longer
    side / 128)), the loss averaged over pixels, the decoders in bfloat16 where the CPU has it natively; see
    gags.distill.train.default_schedule for the measurements behind it. The release's schedule on a CPU: --init zero
    --iterations 30000 --downscale 2 --region-aware True --precision float32.
    """

    out: Positional[Path]
    """Scene output folder (OUT) where `gags reconstruct` and `gags segment` ran."""
    method: MethodName = "gags"
    """gags (GaD) or a baseline: avg (mean of the levels), level-s|m|l (one level), langsplat (three 3-d fields through
    LangSplat's autoencoder), n2f2 (three levels fused per Gaussian by their relevancy to generic phrases),
    langsplat-v2 (sparse coefficients over learned codebooks), lift / lift-consistent (training-free); see
    gags.methods."""
    iterations: int | None = None
    """Iterations; default 30,000 on a GPU, 200 on a CPU."""
    downscale: float | None = None
    """Image downscale for training; default 2 (half resolution) on a GPU, max(1, longer side / 128) on a CPU."""
    seed: int = 42
    """Seed of the decoders' initialisation, the view order and the LangSplat autoencoder."""
    feature_dim: int = 16
    """Per-Gaussian feature size (GAGS: 512 / 32 = 16)."""
    feature_lr: float = 1e-3
    """Adam learning rate of the per-Gaussian features (GAGS)."""
    init: Literal["zero", "lift"] | None = None
    """How a trained field starts: zero features and fresh decoders (the release; default on a GPU), or lift, from
    each Gaussian's lifted features (principal components with a fitted decoder; LangSplat's codes; LangSplatV2's
    nearest codebook entries: gags.distill.init; default on a CPU)."""
    decoder_lr: float = 1e-4
    """Adam learning rate of the feature and granularity decoders (GAGS train.py)."""
    precision: Literal["float32", "bfloat16"] | None = None
    """Precision of the decoders' products while training (weights and the field stay float32): bfloat16 runs them
    under torch.autocast, about 3x faster on CPUs with native bfloat16 (others have no fast bfloat16 path). Default:
    bfloat16 on a CPU with native bfloat16 (AVX512-BF16 or AMX), float32 elsewhere and on a GPU."""
    target: Literal["mix", "weighted-l2"] = "mix"
    """mix: L1 to sum_k g_k f_k (official release); weighted-l2: the paper's sum_k g_k ||f - f_k||^2."""
    region_aware: bool | None = None
    """True: average the loss per region, then over regions (GAGS Scale_balance_loss; default on a GPU); False: mean
    over pixels (default on a CPU, where it keeps more of the targets: gags.distill.train.default_schedule)."""
    entropy: bool = True
    """Entropy regulariser on the granularity weights."""
    consistency: bool = True
    """Feature-consistency regulariser (per-region variance of the rendered feature) in the late phase."""
    entropy_weight: float = 0.001
    """Entropy weight before the late phase (GAGS train.py)."""
    entropy_weight_late: float = 0.002
    """Entropy weight in the late phase (GAGS train.py)."""
    consistency_weight_late: float = 0.1
    """Feature-consistency weight in the late phase (GAGS train.py)."""
    late_start: float = 0.5
    """Fraction of the iterations after which the late phase starts (GAGS: iteration 15,001 of 30,000)."""
    smoothing_kernel: int = 5
    """Box filter size on the granularity map before its argmax picks the regions (GAGS get_trained_seg: 5)."""
    ae_epochs: int | None = None
    """LangSplat autoencoder epochs; default 100 (LangSplat), on a CPU capped by ae_cpu_max_steps."""
    ae_cpu_max_steps: int = 20_000
    """On a CPU, at most this many autoencoder steps by default (a few ms each at batch 64: a few minutes)."""
    ae_batch_size: int = 64
    """LangSplat autoencoder mini-batch (LangSplat autoencoder/train.py)."""
    ae_lr: float = 1e-4
    """LangSplat autoencoder Adam learning rate (LangSplat autoencoder/train.py)."""
    ae_cos_weight: float = 0.001
    """Weight of the cosine term next to the MSE in the autoencoder loss (LangSplat autoencoder/train.py)."""
    langsplat_feature_lr: float = 0.0025
    """Adam learning rate of the per-Gaussian 3-d features of the langsplat baseline (LangSplat language_feature_lr)."""
    sparse_lr: float = 0.0025
    """Adam learning rate of the per-Gaussian logits and the codebooks of langsplat-v2 (LangSplatV2
    language_feature_lr)."""
    encoder: str = "tiny"
    """n2f2 only: the encoder that made the features, for the text embeddings of the generic phrases (as in segment)."""
    checkpoint_every: int = 500
    """Write a resumable checkpoint every N iterations."""
    resume: bool = True
    """Continue from the method's checkpoint in OUT if there is one."""
    threads: int | None = None
    """PyTorch CPU threads (0: PyTorch's default, one per core). Default: every core (--threads 1 when other jobs
    share the CPU)."""


@dataclass
class QueryConfig:
    """Answer a text query: relevancy maps, localization, masks, and a 3D selection."""

    out: Positional[Path]
    """Scene output folder (OUT) with a distilled field in OUT/field/METHOD/."""
    text: Positional[str]
    """The query, e.g. "red cup"."""
    method: str = "gags"
    """The field to query (gags, avg, level-s/m/l, langsplat, n2f2)."""
    views: tuple[str, ...] = ()
    """Image names to render; default: the held-out views."""
    all: bool = False
    """Render every view."""
    ply: bool = False
    """Also write PLYs coloured by relevancy and of the selected Gaussians."""
    encoder: str | None = None
    """Text encoder spec; default: the one `gags segment` recorded in OUT/segment/config.json (else tiny)."""
    downscale: float = 1.0
    """Render the views at their image size divided by this."""
    threshold: float = 0.5
    """3D selection: Gaussians with relevancy above this (0.5: the query beats every canonical phrase)."""


@dataclass
class EvalConfig:
    """LERF-OVS evaluation: localization accuracy and mIoU, training and held-out views."""

    out: Positional[Path]
    labels: Path | None = None
    """Label folder (frame_XXXXX.json); default: the synthetic scene's own labels."""
    method: str = "gags"
    """A method name or 'all' (every method with a field in OUT/field/)."""
    split: Literal["train", "test", "all"] = "all"
    """Evaluate the labelled training views, the labelled held-out views, or both (reported separately)."""
    encoder: str | None = None
    """Text encoder spec; default: the one `gags segment` recorded in OUT/segment/config.json (else tiny)."""
    downscale: float = 1.0
    """Render at the label resolution divided by this (labels are resized to match); 1 = LERF-OVS protocol."""
    figures: bool = True
    """Write the per-query PNGs (relevancy heatmap, predicted mask with the ground-truth outline)."""
    protocol_min_side: int = 720
    """Labels whose long side is shorter are evaluated enlarged to it (LangSplat's 30x30 and 7x7 pixel filters were set
    on ~1000-px LERF-OVS frames; see gags.query.evaluate.PROTOCOL_MIN_SIDE); 0 = always at the label resolution."""


@dataclass
class DemoConfig:
    """Every stage on a synthetic scene with the embedded models, on a CPU: synth, reconstruct, segment, distill,
    eval."""

    out: Path = Path("gags_demo")
    """Demo output folder: the synthetic scene goes to OUT/scene, every stage's output to OUT."""
    preset: str = "ramen"
    """Scene preset: ramen, teatime, figurines, kitchen, or random."""
    seed: int = 0
    """Seed of the scene."""
    resolution: int = 128
    """Image size of the synthetic scene (128 keeps the whole demo within minutes on a laptop CPU)."""
    views: int = 24
    """Training views of the synthetic scene."""
    reconstruct_iterations: int = 1000
    """RGB training iterations (the 3DGS schedule, compressed)."""
    max_gaussians: int = 30_000
    """Gaussian budget of the RGB training (bounds the time of every later stage on a CPU)."""
    distill_iterations: int | None = None
    """Distillation iterations; default: the CPU default of `gags distill`."""
    distill_init: Literal["zero", "lift"] | None = None
    """How the trained fields start (gags distill --init); default the stage's (lift on a CPU, zero on a GPU)."""
    baselines: tuple[BaselineName, ...] = ("avg", "lift", "lift-consistent")
    """Baselines distilled and evaluated next to gags (any method of gags.methods but gags)."""
    segmenter: str = "hierarchy"
    """Segmenter spec, as `gags segment --segmenter`."""
    encoder: str = "tiny"
    """Encoder spec, as `gags segment --encoder`."""


@dataclass
class ReportConfig:
    """Write OUT's report: one self-contained HTML page (images embedded) of whatever stages ran in OUT."""

    out: Positional[Path]
    """Scene output folder (OUT), e.g. the folder `gags demo` filled."""


@dataclass
class ViewConfig:
    """Interactive viewer (viser) with a text box: orbit the scene, type a query, see its relevancy."""

    out: Positional[Path]
    """Scene output folder (OUT) where `gags reconstruct`, `gags segment` and `gags distill` ran."""
    host: str = "127.0.0.1"
    """Address to listen on; 127.0.0.1 keeps the viewer on this machine (0.0.0.0 opens it to the network)."""
    port: int = 8080
    """Port to listen on; when it is taken, the next free one is used (the address is printed); 0: any free port."""
    method: str = "gags"
    """The field to show (gags, avg, level-s/m/l, langsplat, n2f2)."""
    encoder: str | None = None
    """Text encoder spec; default: the one `gags segment` recorded in OUT/segment/config.json (else tiny)."""
    max_size: int = 256
    """Longer side of the rendered image in pixels: every view is rendered on the CPU, so keep it modest."""
    decode_size: int = 128
    """Longer side of the relevancy and granularity maps (decoding every pixel's feature is the costly part; the
    maps are upsampled to --max-size)."""
    threshold: float = 0.5
    """Selected-Gaussians mode: Gaussians with relevancy above this (0.5: the query beats every canonical phrase)."""
    threads: int = 1
    """PyTorch CPU threads for rendering (0: PyTorch's default, one per core). 1 by default: frames are small, and
    waiting threads cost more than they give when other jobs share the CPU."""


@dataclass
class BenchAblationConfig:
    """The ablation tables over presets and seeds: synth -> reconstruct -> segment (GaS and uniform prompts) -> distill
    every method -> eval, per preset and seed, then Markdown and JSON tables of mean +- std over seeds
    (OUT/ablation.md, OUT/ablation.json); resumes (see gags.bench.ablation)."""

    out: Path = Path("bench_ablation")
    """The benchmark folder: one scene output folder per preset, seed and prompt mode, and the tables."""
    presets: tuple[str, ...] = ("ramen", "teatime", "figurines", "kitchen")
    """Scene presets of `gags synth`."""
    seeds: int = 3
    """Seeds 0..N-1 per preset (the scene's seed; every stage's seed is its default + the seed)."""
    resolution: int = 64
    """Image size of the synthetic scenes (the time of every stage grows with it)."""
    views: int = 24
    """Training views per scene (held-out views are added, one per 8)."""
    reconstruct_iterations: int = 500
    """RGB training iterations."""
    max_gaussians: int = 10_000
    """Ceiling on the Gaussians densification may reach (the synthetic scenes start from 20,000 points)."""
    distill_iterations: int | None = None
    """Distillation iterations; default the CPU default of `gags distill` (200 at <= 128 px, lifted start)."""
    distill_init: Literal["zero", "lift"] | None = None
    """How the trained fields start (gags distill --init); default the stage's (lift on a CPU, zero on a GPU)."""
    methods: tuple[MethodName, ...] = ("gags", "avg", "level-s", "level-m", "level-l", "langsplat", "lift",
                                       "lift-consistent")
    """Methods distilled from the GaS (depth-aware) prompts."""
    uniform_methods: tuple[MethodName, ...] = ("gags", "avg")
    """Methods distilled from the uniform prompt grid (GaD without GaS, and neither)."""
    variants: tuple[str, ...] = ("no-region-aware", "no-entropy", "no-consistency")
    """GaD with switches off (Table 6): no-region-aware, no-entropy, no-consistency, or all-off."""
    segmenter: str = "hierarchy"
    """Segmenter spec, as `gags segment --segmenter`."""
    min_region_area: int | None = None
    """`gags segment --min-region-area` (default: the release's 100 px scaled to the image's size)."""
    encoder: str | None = None
    """Encoder spec; default tiny."""
    eval_downscale: float = 1.0
    """Render the evaluation at the label resolution divided by this (1 = LERF-OVS protocol)."""
    protocol_min_side: int = 720
    """Labels smaller than this are evaluated enlarged to it, as `gags eval --protocol-min-side`."""
    figures: bool = True
    """Write the per-query PNGs of `gags eval` (to look at failures)."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, one per core)."""
    ray: str | None = None
    """Run the (preset, seed) runs as Ray tasks (pip install "gags[ray]"): local | auto | HOST:PORT of a head. Each
    resumes as without Ray; the tables are built here. OUT must be on storage every node sees."""
    ray_cpus_per_task: float = 1.0
    """With --ray: CPU cores each (preset, seed) run reserves (set --threads to match)."""
    ray_gpus_per_task: float = 0.0
    """With --ray: GPUs each (preset, seed) run reserves."""


@dataclass
class BenchQueryConfig:
    """Query speed, GAGS vs LangSplat: time to answer every (frame, query) pair of a scene's evaluation set
    (OUT/bench/query.json; see gags.bench.query)."""

    out: Positional[Path]
    """Scene output folder (OUT) where `gags distill` ran with --method gags and --method langsplat."""
    labels: Path | None = None
    """Label folder; default the synthetic scene's own labels."""
    encoder: str | None = None
    """Text encoder spec; default the one `gags segment` recorded."""
    repeats: int = 3
    """Timed passes per method after one warm-up; each method's fastest pass is reported."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, one per core)."""


@dataclass
class BenchLadderConfig:
    """Where query quality is lost: the label's own masks (R0), exact entity masks encoded (R1, procedural scenes),
    the segment stage's features (R2) and every distilled field (R3), scored by the protocol of `gags eval`
    (OUT/bench/ladder.json; see gags.bench.ladder)."""

    out: Positional[Path]
    """Scene output folder (OUT) with labels (a procedural scene's own, or --labels)."""
    labels: Path | None = None
    """Label folder (LERF-OVS frame_XXXXX.json); default the synthetic scene's own labels."""
    encoder: str | None = None
    """Text (and R1 image) encoder spec; default the one `gags segment` recorded."""
    split: Literal["train", "test", "all"] = "all"
    """The labelled training views, the labelled held-out views, or both (reported separately)."""
    methods: tuple[str, ...] = ()
    """Fields of R3; default every field in OUT."""
    protocol_min_side: int = 720
    """Labels smaller than this are evaluated enlarged to it, as `gags eval --protocol-min-side`."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, one per core)."""


@dataclass
class BenchRasterizeConfig:
    """The PyTorch rasterizer: forward and forward+backward time, (Gaussian, pixel) pairs per second, over a grid of
    sizes (see gags.bench.rasterize)."""

    out: Path = Path("bench_out/rasterize.json")
    """Where to write the JSON record."""
    repeats: int = 3
    """Timed runs per case after one warm-up; the fastest is reported."""
    quick: bool = False
    """Only the target case (20k Gaussians, 128x128, 16 channels)."""
    threads: int = 0
    """PyTorch intra-op threads (0: PyTorch's default)."""


@dataclass
class BenchReconstructConfig:
    """`gags reconstruct` on real photos: held-out PSNR/SSIM along the run, wall and CPU time, time split (see
    gags.bench.reconstruct)."""

    scene: Positional[Path]
    """A scene `gags reconstruct` reads (e.g. a COLMAP scene folder)."""
    images_dir: str = "images_8"
    """Image folder inside the scene."""
    downscale: int = 1
    """Train on images downscaled by this integer factor."""
    iterations: int = 7000
    """Training iterations (the 3DGS schedule scaled to them)."""
    checkpoints: tuple[int, ...] = (1000, 3000, 7000)
    """Iteration counts whose figures are reported apart."""
    eval_every: int = 500
    """Evaluate the held-out views every N iterations."""
    max_gaussians: int | None = None
    """Ceiling on the Gaussians densification may reach; default: the CPU default of `gags reconstruct`."""
    threads: int = 0
    """PyTorch threads (0: PyTorch's default)."""
    target_psnr: float = 20.0
    """Held-out PSNR (dB) whose first crossing is reported with its time."""
    work: Path | None = None
    """Scene output folder to keep (default: a temporary one, deleted afterwards)."""
    out: Path = Path("bench_out/reconstruct.json")
    """Where to write the JSON record."""


@dataclass
class BenchMaskNmsConfig:
    """LangSplat's mask NMS: the vectorised implementation against a literal per-pair loop of its rules, on SAM-like
    masks (see gags.bench.mask_nms)."""

    out: Path = Path("bench_out/mask_nms.json")
    """Where to write the JSON record."""
    objects: int = 400
    """Objects per image (most are partly hidden)."""
    seeds: int = 1
    """Random images per size."""
    repeats: int = 3
    """Runs of the vectorised version (the fastest is kept)."""
    sizes: tuple[str, ...] = ("256x256", "730x988")
    """Image sizes, as HxW."""
    threads: int = 0
    """PyTorch threads for both versions (0: PyTorch's default)."""


@dataclass
class BenchSegmenterConfig:
    """An embedded segmenter (hierarchy by default, or any --segmenter spec): speed, or mask quality on renders of the
    procedural world (see gags.bench.hierarchy_segmenter)."""

    what: Positional[Literal["speed", "quality"]]
    """speed: set_image + predict on photos; quality: IoU of its masks with the exact entities."""
    segmenter: str = "hierarchy"
    """The segmenter measured, as `gags segment --segmenter` (tinysam, sam:tiny:/path.safetensors, ...)."""
    images: Path | None = None
    """speed: a folder of photos (resized to 256 x 256)."""
    points: tuple[int, ...] = ()
    """Prompt points per image (speed: default 64 and 400; quality: default 150, the first value)."""
    repeats: int = 5
    """speed: images timed."""
    seeds: int = 2
    """quality: worlds per preset."""
    seed_base: int = 100
    """quality: the first world seed (the constants were tuned on 100-103; report 200 onwards as held out)."""
    depth: Literal["exact", "points", "none"] = "exact"
    """quality: the depth given to the segmenter: the renderer's, one rendered from untrained Gaussians, or none."""
    views: int = 3
    """quality: views per world."""
    size: int = 256
    """quality: rendered image side in pixels."""
    mask_grid: int | None = None
    """quality: score every mask as drawn on a MASK_GRID x MASK_GRID grid (its share of each cell, bilinearly back
    to the image, > 0.5): with --segmenter oracle, the best a segmenter whose masks are that coarse can do."""
    set: tuple[str, ...] = ()
    """NAME=VALUE HierarchySegmenter arguments (e.g. thresholds=10,25,60 superpixel_area=100)."""
    out: Path | None = None
    """Where to write the JSON record (default: printed only)."""


@dataclass
class BenchConsistencyConfig:
    """Multi-view consistency and purity of the segments of `gags segment`, GaS against uniform prompts (see
    gags.bench.segment_consistency)."""

    out: Path = Path("bench_out/segment_consistency")
    """Working folder (scenes and segment outputs) and its JSON record."""
    presets: tuple[str, ...] = ("ramen", "teatime", "figurines")
    """Scene presets of `gags synth`."""
    modes: tuple[Literal["gags", "paper", "uniform"], ...] = ("gags", "paper", "uniform")
    """Prompt modes of `gags segment --prompts`."""
    resolution: int = 128
    """Image size of the synthetic scenes."""
    views: int = 12
    """Training views per scene."""
    seed: int = 0
    """Seed of the scenes."""
    encoder: str | None = None
    """Encoder spec (default: tiny)."""
    threads: int = 1
    """PyTorch threads."""


@dataclass
class BenchSynthConfig:
    """`gags synth`: time per view of the procedural renderer, and optionally a reconstruction's held-out PSNR on
    its scenes (see gags.bench.synth)."""

    out: Path = Path("bench_out/synth.json")
    """Where to write the JSON record."""
    presets: tuple[str, ...] = ("ramen", "teatime", "figurines", "kitchen")
    """Scene presets."""
    resolution: int = 256
    """Image size."""
    views: int = 40
    """Training views."""
    seed: int = 0
    """Seed of the scenes."""
    reconstruct: int = 0
    """Also reconstruct each preset for this many iterations and report the held-out PSNR (0: no)."""
    skip_synth: bool = False
    """Only the --reconstruct figure."""


@dataclass
class BenchSegmentScalingConfig:
    """`gags segment` in this process, in threads and on Ray (1 and N workers): wall time, Ray's overhead per image, and
    a scaling model for many GPUs (see gags.bench.segment_scaling)."""

    out: Positional[Path]
    """A scene output folder with Gaussians (after `gags reconstruct`); each case segments a copy of it."""
    workers: tuple[int, ...] = (1, 2)
    """Worker counts timed with --workers N (threads) and with --ray-workers N."""
    ray: str = "local"
    """Ray cluster of the Ray cases (local: one started on this machine for each run, as `--ray local` does)."""
    repeats: int = 3
    """Runs of every case (mean and spread are reported)."""
    segmenter: str = "hierarchy"
    """Segmenter spec of every case."""
    encoder: str = "tiny"
    """Encoder spec of every case."""
    sam_seconds_per_image: float | None = None
    """Seconds per image of `gags segment` with a real architecture (e.g. SAM ViT-H) measured on this machine, shown in
    the scaling model beside the published GPU figures."""
    model_images: int = 300
    """Images of the scene of the scaling model (a LERF scene has 100-300)."""
    model_gpus: tuple[int, ...] = (1, 4, 16)
    """GPU counts of the scaling model."""


@dataclass
class BenchGranularityConfig:
    """Which granularity a one-map field answers with, and why: the distance of its prediction to each level's segment
    features, and GaD's granularity weights (OUT/bench/granularity.json; see gags.bench.granularity)."""

    out: Positional[Path]
    """Scene output folder (OUT) with a distilled field."""
    method: str = "gags"
    """The field to read (one with a feature decoder: gags, avg, level-s|m|l, n2f2)."""
    downscale: float | None = None
    """Resolution of the training views; default the one the field was distilled at."""
    threads: int = 1
    """PyTorch CPU threads (0: PyTorch's default, one per core)."""


BenchmarkConfig = Union[  # noqa: UP007 (tyro names the subcommands from the Annotated members)
    Annotated[BenchAblationConfig, tyro.conf.subcommand("ablation")],
    Annotated[BenchQueryConfig, tyro.conf.subcommand("query")],
    Annotated[BenchLadderConfig, tyro.conf.subcommand("ladder")],
    Annotated[BenchRasterizeConfig, tyro.conf.subcommand("rasterize")],
    Annotated[BenchReconstructConfig, tyro.conf.subcommand("reconstruct")],
    Annotated[BenchMaskNmsConfig, tyro.conf.subcommand("mask-nms")],
    Annotated[BenchSegmenterConfig, tyro.conf.subcommand("hierarchy-segmenter")],
    Annotated[BenchConsistencyConfig, tyro.conf.subcommand("segment-consistency")],
    Annotated[BenchSynthConfig, tyro.conf.subcommand("synth")],
    Annotated[BenchSegmentScalingConfig, tyro.conf.subcommand("segment-scaling")],
    Annotated[BenchGranularityConfig, tyro.conf.subcommand("granularity")],
]


@dataclass
class BenchConfig:
    """Benchmarks: each measures, prints and writes its figures as JSON (gags bench NAME --help)."""

    benchmark: tyro.conf.OmitSubcommandPrefixes[BenchmarkConfig]


@dataclass
class TrainEncoderConfig:
    """Train the embedded tiny CLIP on renders of the procedural world (or evaluate the shipped weights)."""

    out: Path = Path("tinyclip_out")
    """Working folder: cached training crops, checkpoint, and the trained model in OUT/tinyclip (open_clip
    local-dir)."""
    seed: int = 0
    """Seed of the training worlds, views, augmentation and initialisation (0..998)."""
    eval_only: bool = False
    """Print the zero-shot accuracy table of the shipped weights (or of --weights) and exit."""
    weights: Path | None = None
    """With --eval-only: an open_clip local-dir folder to evaluate instead of the shipped weights."""
    worlds: int = 42
    """Training worlds per preset (ramen, teatime, figurines, kitchen, random)."""
    views: int = 4
    """Rendered views per training world."""
    epochs: int = 13
    batch_size: int = 128
    lr: float = 2e-3
    """Peak learning rate (AdamW; linear warm-up, cosine decay)."""
    workers: int = 2
    """Processes rendering the training crops."""
    threads: int = 0
    """PyTorch threads for training (0: PyTorch's default, one per core); 1 is faster when other jobs share the CPU."""
    eval_worlds: int = 3
    """Held-out worlds per preset for the accuracy table (seeds never used for training)."""


@dataclass
class TrainSegmenterConfig:
    """Train the embedded SAM-architecture segmenter (tinysam) on renders of the procedural world (or evaluate the
    shipped weights)."""

    out: Path = Path("tinysam_out")
    """Working folder: cached training views, the checkpoint, and the trained weights in OUT/tinysam."""
    seed: int = 0
    """Seed of the training worlds, views, prompts, augmentation and initialisation (0..998)."""
    eval_only: bool = False
    """Print the quality table of the shipped weights (or of --weights) beside hierarchy's, and exit."""
    weights: Path | None = None
    """With --eval-only: a tinysam.safetensors to evaluate instead of the shipped weights."""
    worlds: int = 40
    """Training worlds per preset (ramen, teatime, figurines, kitchen, random)."""
    views: int = 8
    """Rendered views per training world."""
    steps: int = 3000
    """Optimisation steps (8 views x 16 prompt points each)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW; linear warm-up, cosine decay)."""
    matching: Literal["best", "level"] = "best"
    """Which output a true mask trains: best, the output that fits it best (SAM's rule for ambiguous prompts); level,
    output k for the level-k entity (sub-part, part, whole), the order the segment stage reads them in."""
    focal_alpha: float = 0.25
    """Weight of the pixels inside the true mask in the focal loss (1 - it: outside); 0.25 is the focal loss's
    default (SAM's loss), 0.5 weighs both alike."""
    init: Path | None = None
    """Start from these weights (a tinysam.safetensors) instead of a random initialisation: a second stage of
    training, e.g. --matching level after a first stage with --matching best (then each level's output starts from
    the output that fits that level best on the first training views; weights trained with --matching level keep
    their outputs in place)."""
    workers: int = 2
    """Processes rendering the training views."""
    threads: int = 0
    """Threads sharing each training step's views, each running PyTorch single-threaded (0: one per CPU core); the
    same count gives the same weights."""
    eval_worlds: int = 3
    """Held-out worlds per preset for the quality table (seeds never used for training)."""
    eval_views: int = 4
    """Views per held-out world."""
    eval_points: int = 100
    """Random points on the objects per held-out view."""


STAGES: dict[str, tuple[type, str]] = {
    # verb: (config class, "module:function" that runs it)
    "synth": (SynthConfig, "gags.synth.scenes:run"),
    "reconstruct": (ReconstructConfig, "gags.splat.reconstruct:run"),
    "segment": (SegmentConfig, "gags.segment.extract:run"),
    "distill": (DistillConfig, "gags.distill.train:run"),
    "query": (QueryConfig, "gags.query.answer:run"),
    "eval": (EvalConfig, "gags.query.evaluate:run"),
    "demo": (DemoConfig, "gags.demo:run"),
    "report": (ReportConfig, "gags.report:run"),
    "view": (ViewConfig, "gags.viewer:run"),
    "bench": (BenchConfig, "gags.bench:run"),
    "train-encoder": (TrainEncoderConfig, "gags.models.train_tinyclip:run"),
    "train-segmenter": (TrainSegmenterConfig, "gags.models.train_tinysam:run"),
}
