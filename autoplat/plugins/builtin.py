"""Every plugin autoplat ships, as light entry points: what each registers, by kind, and
where it lives ("module:Class"). Registering is lazy: a module (torch and all) is imported
the first time one of its items is used, so `platform --help` imports none of them.

Each name below is an entry point in pyproject.toml (``vit = "autoplat.plugins.builtin:vit"``);
``tests/test_registry.py`` checks that every target imports and carries the registered name.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from autoplat.core.hookspecs import Command, Register, hookimpl, lazy
from autoplat.plugins.av_superb_command import AV_SUPERB
from autoplat.plugins.scorers.embedding.experts_command import EXPERTS
from autoplat.plugins.scorers.metaclip_command import METADATA

A = "autoplat.plugins.architectures"
D = "autoplat.plugins.datasets"
S = "autoplat.strategies"


def builtin(commands: tuple[Command, ...] = (), **kinds: dict[str, str]) -> SimpleNamespace:
    """A plugin object with one ``register_<kind>`` hook per kind given: ``kinds`` maps a
    kind to {item name: "module:Class"}; ``commands`` are registered as they are."""

    def hook(targets: dict[str, str]) -> Callable[[Register], None]:
        def register_items(register: Register) -> None:
            for name, target in targets.items():
                register(lazy(name, target))

        return hookimpl(register_items)

    hooks = {f"register_{kind}": hook(targets) for kind, targets in kinds.items()}
    if commands:

        def register_commands(register: Register[Command]) -> None:
            for command in commands:
                register(command)

        hooks["register_commands"] = hookimpl(register_commands)
    return SimpleNamespace(**hooks)


vit = builtin(architectures={"vit": f"{A}.vit:ViT"})
mlp = builtin(architectures={"mlp": f"{A}.mlp:MLP"})
clip = builtin(architectures={"clip": f"{A}.clip:CLIP"})
video_text = builtin(architectures={"video-text": f"{A}.video_text:VideoText"})
dino = builtin(architectures={"dino": f"{A}.dino:DINO"})
latent_diffusion = builtin(
    architectures={
        "latent-diffusion": f"{A}.latent_diffusion:LatentDiffusion",
        "scene-transfer": f"{A}.scene_transfer:SceneTransfer",
    }
)
audio = builtin(architectures={"audio": f"{A}.audio:Audio"})
audio_visual = builtin(
    commands=(AV_SUPERB,),
    architectures={
        "audio-visual": f"{A}.audio_visual:AudioVisual",
        "av-superb": f"{A}.av_superb:AVSuperb",
    },
)

digits = builtin(datasets={"digits": f"{D}.digits:Digits"})
mnist5k = builtin(datasets={"mnist5k": f"{D}.mnist5k:Mnist5k"})
image_folder = builtin(datasets={"image-folder": f"{D}.image_folder:ImageFolder"})
csv = builtin(datasets={"csv": f"{D}.csv_table:CsvTable"})
shapes = builtin(datasets={"shapes": f"{D}.shapes:Shapes"})
image_captions = builtin(datasets={"image-captions": f"{D}.image_captions:ImageCaptions"})
video_captions = builtin(
    datasets={
        "moving-shapes": f"{D}.video:MovingShapes",
        "video-captions": f"{D}.video:VideoCaptions",
    }
)
audio_datasets = builtin(
    datasets={
        "sound-events": f"{D}.audio:SoundEvents",
        "audio-visual-events": f"{D}.audio:AudioVisualEvents",
        "audio-folder": f"{D}.audio:AudioFolder",
        "av-scenes": f"{D}.av_scenes:AVScenes",
        "av-folder": f"{D}.av_scenes:AVFolder",
        "av-suite": f"{D}.av_suite:AVSuite",
    }
)

search_strategies = builtin(
    strategies={
        "random": f"{S}.search.random:RandomSearch",
        "grid": f"{S}.search.grid:GridSearch",
        "tpe": f"{S}.search.tpe:TPESearch",
        "evolution": f"{S}.search.evolution:RegularizedEvolution",
        "reinforce": f"{S}.search.reinforce:Reinforce",
        "local": f"{S}.search.local:LocalSearch",
        "bananas": f"{S}.search.bananas:Bananas",
        "bohb": f"{S}.search.bohb:BOHB",
        "nsga2": f"{S}.search.nsga2:NSGA2Search",
        "tpe-random": f"{S}.search.bohb:TPERandom",
        "nni": f"{S}.search.nni_tuners:NNITuner",
    }
)
one_shot = builtin(
    strategies={
        "spos": f"{S}.search.oneshot.spos:SPOS",
        "darts": f"{S}.search.oneshot.darts:DARTS",
    }
)
acquisitions = builtin(
    acquisitions={
        "random": f"{S}.acquisition.uncertainty:Random",
        "least-confidence": f"{S}.acquisition.uncertainty:LeastConfidence",
        "margin": f"{S}.acquisition.uncertainty:Margin",
        "entropy": f"{S}.acquisition.uncertainty:Entropy",
        "bald": f"{S}.acquisition.bayesian:BALD",
        "variation-ratios": f"{S}.acquisition.bayesian:VariationRatios",
        "mean-std": f"{S}.acquisition.bayesian:MeanStd",
        "batchbald": f"{S}.acquisition.bayesian:BatchBALD",
        "coreset": f"{S}.acquisition.diversity:CoreSet",
        "typiclust": f"{S}.acquisition.diversity:TypiClust",
        "badge": f"{S}.acquisition.hybrid:BADGE",
        "ranked-batch": f"{S}.acquisition.hybrid:RankedBatch",
        "cluster-margin": f"{S}.acquisition.hybrid:ClusterMargin",
        "qbc-vote-entropy": f"{S}.acquisition.committee:VoteEntropy",
        "qbc-kl": f"{S}.acquisition.committee:KLDisagreement",
    }
)

metaclip = builtin(
    commands=(METADATA,), scorers={"metaclip": "autoplat.plugins.scorers.metaclip:MetaCLIP"}
)
text_quality = builtin(
    scorers={"text-quality": "autoplat.plugins.scorers.text_quality:TextQuality"},
    language_models={
        "ngram": "autoplat.plugins.scorers.language_models:NGramLM",
        "huggingface": "autoplat.plugins.scorers.language_models:HuggingFaceLM",
    },
)
embedding_scorers = builtin(
    commands=(EXPERTS,),
    scorers={
        "dedup": "autoplat.plugins.scorers.embedding.dedup:Dedup",
        "retrieval": "autoplat.plugins.scorers.embedding.retrieval:Retrieval",
        "balanced": "autoplat.plugins.scorers.embedding.balanced:Balanced",
        "mode": "autoplat.plugins.scorers.embedding.mode:MoDE",
    },
)
embedders = builtin(
    embedders={
        "minilm": "autoplat.plugins.embedders:MiniLM",
        "hashing": "autoplat.plugins.embedders:Hashing",
        "study": "autoplat.plugins.embedders:StudyModel",
    }
)
