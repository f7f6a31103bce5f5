"""fairseq's own audio tasks loading a split, configured as fairseq-hydra-train would (for manifest tests)."""

from fairseq import tasks
from fairseq.dataclass.configs import FairseqConfig
from omegaconf import OmegaConf


def _task(name: str, task_cfg):
    cfg = OmegaConf.structured(FairseqConfig())
    cfg.task = OmegaConf.structured(task_cfg)
    cfg.task._name = name
    return tasks.setup_task(cfg.task)


def audio_finetuning_split(data: str, split: str, labels: str = "ltr"):
    """``audio_finetuning`` (CTC fine-tuning's task) with ``split`` loaded: its dataset."""
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig

    task = _task("audio_finetuning", AudioFinetuningConfig(data=data, labels=labels))
    task.load_dataset(split)
    return task.datasets[split]


def hubert_pretraining_split(data: str, split: str, labels=("phn",), label_rate: float = 50.0):
    """``hubert_pretraining`` with ``split`` loaded (labels and dict.LABEL.txt read from ``data``)."""
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    task = _task("hubert_pretraining", HubertPretrainingConfig(data=data, labels=list(labels),
                                                               label_rate=label_rate))
    task.load_dataset(split)
    return task.datasets[split]
