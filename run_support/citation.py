"""The reference paper's citation (MRES, UniRES, RefCOCO_m, MRES-32M): one constant for every card and builder."""

UNIRES_CITATION = """@inproceedings{wang2024unveiling,
  title     = {Unveiling Parts Beyond Objects: Towards Finer-Granularity Referring Expression Segmentation},
  author    = {Wang, Wenxuan and Yue, Tongtian and Zhang, Yisi and Guo, Longteng and He, Xingjian and Wang, Xinlong and Liu, Jing},
  booktitle = {CVPR},
  year      = {2024}
}"""
