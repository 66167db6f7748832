"""The controlled vocabularies: every term with its label, synonyms, parent and public code.

These tables are the project's own normalisation of the survey's free text. They are loaded into the
`vocabulary` table by the importer; search and the importer resolve any spelling through `resolve()`.
Codes: DICOM modality codes (PS3.3 C.7.3.1.1.1) and UBERON / Cell Ontology ids for anatomy.
"""

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Term:
    id: str
    label: str
    synonyms: tuple[str, ...] = ()
    parent: str | None = None
    code: str | None = None
    code_system: str | None = None
    description: str | None = None


@dataclass
class Vocabulary:
    kind: str
    label: str
    terms: list[Term]
    _by_key: dict[str, str] = field(default_factory=dict, repr=False)
    _by_id: dict[str, Term] = field(default_factory=dict, repr=False)
    _ancestors: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # lookups run per facet value on every search: index them once
        self._by_id = {term.id: term for term in self.terms}
        for term in self.terms:
            for key in (term.id, term.label, *term.synonyms):
                self._by_key.setdefault(normalise_key(key), term.id)
        for term in self.terms:
            chain: list[str] = []
            current = term.parent
            while current is not None and current not in chain:
                chain.append(current)
                current = self._by_id[current].parent
            self._ancestors[term.id] = chain

    def resolve(self, text: str) -> str | None:
        """The term id for any spelling (id, label or synonym, any case and spacing), or None."""
        return self._by_key.get(normalise_key(text))

    def term(self, term_id: str) -> Term:
        return self._by_id[term_id]

    def __contains__(self, term_id: object) -> bool:
        return term_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    def ancestors(self, term_id: str) -> list[str]:
        """Parents of a term up to the root (anatomy is a hierarchy; other vocabularies are flat)."""
        return list(self._ancestors.get(term_id, []))

    def descendants(self, term_id: str) -> list[str]:
        return [t.id for t in self.terms if term_id in self.ancestors(t.id)]


def normalise_key(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key: 'X-Ray', 'x ray' and 'XRAY' meet."""
    text = text.replace("\u200d", "").replace("\u200b", "").strip().lower()
    return re.sub(r"[\s\-\u2013\u2014_.]+", "", text)


def _t(id: str, label: str, *synonyms: str, **extra: str | None) -> Term:
    return Term(id, label, tuple(synonyms), **extra)  # type: ignore[arg-type]


MODALITY = Vocabulary(
    "modality",
    "Modality",
    [
        _t(
            "CT",
            "CT",
            "computed tomography",
            "cat scan",
            "ct scan",
            "cbct",
            "cone beam ct",
            "fbct",
            code="CT",
            code_system="DICOM",
        ),
        _t(
            "MR",
            "MR",
            "mri",
            "magnetic resonance",
            "magnetic resonance imaging",
            "fmri",
            "dwi",
            "mr imaging",
            code="MR",
            code_system="DICOM",
        ),
        _t("PT", "PET", "pet", "positron emission tomography", "pt", code="PT", code_system="DICOM"),
        _t(
            "NM",
            "SPECT / nuclear medicine",
            "spect",
            "nuclear medicine",
            "scintigraphy",
            code="NM",
            code_system="DICOM",
        ),
        _t(
            "US",
            "Ultrasound",
            "ultrasound",
            "us",
            "sonography",
            "echocardiography",
            "echo",
            "3d us",
            code="US",
            code_system="DICOM",
        ),
        _t(
            "XR",
            "X-ray radiography",
            "x-ray",
            "xray",
            "radiograph",
            "radiography",
            "cxr",
            "chest x-ray",
            "dx",
            "cr",
            "3d x-ray",
            "rf",
            code="DX",
            code_system="DICOM",
            description="Projection radiography (DICOM DX and CR).",
        ),
        _t(
            "MG",
            "Mammography",
            "mammography",
            "mammogram",
            "mg",
            "mammary x-ray",
            code="MG",
            code_system="DICOM",
        ),
        _t("XA", "X-ray angiography", "angiography", "dsa", "3d dsa", "xa", code="XA", code_system="DICOM"),
        _t(
            "OCT",
            "OCT",
            "optical coherence tomography",
            "octa",
            "oct angiography",
            "octa (ct)",
            code="OPT",
            code_system="DICOM",
        ),
        _t(
            "FUNDUS",
            "Fundus photography",
            "fundus",
            "fundus photo",
            "fundus photography",
            "cfp",
            "color fundus photography",
            "retinal photography",
            "retinal image",
            "fundus (cfp)",
            "fundus photo (cfp)",
            "fundus (iris)",
            "op",
            code="OP",
            code_system="DICOM",
        ),
        _t(
            "ENDOSCOPY",
            "Endoscopy",
            "endoscopy",
            "es",
            "colonoscopy",
            "laparoscopy",
            "capsule endoscopy",
            "gastroscopy",
            "colposcopy",
            "colposcopy (capsule)",
            code="ES",
            code_system="DICOM",
        ),
        _t("DERMOSCOPY", "Dermoscopy", "dermoscopy", "dermatoscopy", "dermoscopic"),
        _t(
            "HISTOPATHOLOGY",
            "Histopathology",
            "histopathology",
            "histology",
            "histo",
            "pathology",
            "wsi",
            "whole slide image",
            "whole slide imaging",
            "histopathology (wsi)",
            "histopathology (patch)",
            "biopsy slides",
            "histopathology?",
            "sm",
            "slide microscopy",
            code="SM",
            code_system="DICOM",
        ),
        _t(
            "MICROSCOPY",
            "Microscopy",
            "microscopy",
            "3d microscopy",
            "cell microscopy",
            "fluorescence microscopy",
            "gm",
            code="GM",
            code_system="DICOM",
        ),
        _t(
            "PHOTOGRAPHY",
            "Photography",
            "photo",
            "photography",
            "digital photography",
            "rgb",
            "clinical photo",
            "xc",
            code="XC",
            code_system="DICOM",
        ),
        _t("INFRARED", "Infrared imaging", "infrared", "thermography", "infrared reflectance imaging", "ir"),
        _t("RTIMAGE", "Radiotherapy image", "rtimage", "rt image", code="RTIMAGE", code_system="DICOM"),
        _t(
            "OTHER",
            "Other",
            "other",
            "others",
            "ot",
            "sc",
            "series data",
            "eeg",
            "meg",
            description="Other or unspecified imaging (DICOM OT/SC, signals such as EEG/MEG).",
        ),
    ],
)

# DICOM objects that hold annotations or plans, not images: they say what a collection contains, not a modality.
NON_IMAGE_DICOM = {"seg", "sr", "rtstruct", "rtdose", "rtplan", "pr", "ko", "reg"}

ANATOMY = Vocabulary(
    "anatomy",
    "Anatomy",
    [
        _t(
            "whole_body",
            "Whole body",
            "full body",
            "whole-body",
            "body",
            "various",
            "multi-organ",
            "multi organ",
            code="UBERON:0000468",
            code_system="UBERON",
        ),
        _t(
            "head_and_neck",
            "Head and neck",
            "head and neck",
            "head-neck",
            "head/neck",
            "head & neck",
            "h&n",
            "hnc",
            parent="whole_body",
            code="UBERON:0007811",
            code_system="UBERON",
        ),
        _t("head", "Head", "cranium", parent="head_and_neck", code="UBERON:0000033", code_system="UBERON"),
        _t(
            "brain",
            "Brain",
            "cerebrum",
            "neuro",
            "cerebral",
            "brains",
            parent="head",
            code="UBERON:0000955",
            code_system="UBERON",
        ),
        _t("hippocampus", "Hippocampus", parent="brain", code="UBERON:0001954", code_system="UBERON"),
        _t("cerebellum", "Cerebellum", parent="brain", code="UBERON:0002037", code_system="UBERON"),
        _t(
            "brainstem",
            "Brainstem",
            "brain stem",
            parent="brain",
            code="UBERON:0002298",
            code_system="UBERON",
        ),
        _t(
            "pituitary",
            "Pituitary gland",
            "pituitary",
            parent="brain",
            code="UBERON:0000007",
            code_system="UBERON",
        ),
        _t(
            "eye",
            "Eye",
            "eyes",
            "ocular",
            "iris",
            "pupil",
            parent="head",
            code="UBERON:0000970",
            code_system="UBERON",
        ),
        _t(
            "retina", "Retina", "retinal", "fundus", parent="eye", code="UBERON:0000966", code_system="UBERON"
        ),
        _t(
            "optic_nerve",
            "Optic nerve",
            "optic nerves",
            "optic nerve head",
            "optic disc",
            "chiasm",
            "optic chiasm",
            parent="eye",
            code="UBERON:0000941",
            code_system="UBERON",
        ),
        _t("skull", "Skull", parent="head", code="UBERON:0003129", code_system="UBERON"),
        _t(
            "mandible",
            "Mandible",
            "jaw",
            "inferior alveolar nerve",
            parent="head",
            code="UBERON:0001684",
            code_system="UBERON",
        ),
        _t("teeth", "Teeth", "tooth", "dental", parent="head", code="UBERON:0001091", code_system="UBERON"),
        _t(
            "mouth",
            "Mouth",
            "oral cavity",
            "lip",
            "tongue",
            parent="head",
            code="UBERON:0000165",
            code_system="UBERON",
        ),
        _t("cochlea", "Cochlea", "inner ear", parent="head", code="UBERON:0001844", code_system="UBERON"),
        _t("neck", "Neck", parent="head_and_neck", code="UBERON:0000974", code_system="UBERON"),
        _t("thyroid", "Thyroid", "thyroid gland", parent="neck", code="UBERON:0002046", code_system="UBERON"),
        _t(
            "carotid_artery",
            "Carotid artery",
            "carotid",
            "carotid arteries",
            "internal carotid artery",
            parent="neck",
            code="UBERON:0005396",
            code_system="UBERON",
        ),
        _t(
            "salivary_gland",
            "Salivary gland",
            "salivary glands",
            "parotid",
            "paro",
            parent="neck",
            code="UBERON:0001044",
            code_system="UBERON",
        ),
        _t(
            "thorax",
            "Thorax",
            "chest",
            "thoracic",
            "thoracic cavity",
            parent="whole_body",
            code="UBERON:0000915",
            code_system="UBERON",
        ),
        _t(
            "lung",
            "Lung",
            "lungs",
            "pulmonary",
            "airway",
            "airways",
            "trachea",
            parent="thorax",
            code="UBERON:0002048",
            code_system="UBERON",
        ),
        _t(
            "pulmonary_artery", "Pulmonary artery", parent="lung", code="UBERON:0002012", code_system="UBERON"
        ),
        _t(
            "heart",
            "Heart",
            "cardiac",
            "cardiovascular",
            parent="thorax",
            code="UBERON:0000948",
            code_system="UBERON",
        ),
        _t(
            "atrium",
            "Atrium",
            "left atrium",
            "atria",
            parent="heart",
            code="UBERON:0002081",
            code_system="UBERON",
        ),
        _t("mitral_valve", "Mitral valve", parent="heart", code="UBERON:0002135", code_system="UBERON"),
        _t("aorta", "Aorta", parent="thorax", code="UBERON:0000947", code_system="UBERON"),
        _t("mediastinum", "Mediastinum", parent="thorax", code="UBERON:0003728", code_system="UBERON"),
        _t("thymus", "Thymus", parent="mediastinum", code="UBERON:0002370", code_system="UBERON"),
        _t("ribs", "Ribs", "rib", parent="thorax", code="UBERON:0002228", code_system="UBERON"),
        _t("clavicle", "Clavicle", parent="thorax", code="UBERON:0001105", code_system="UBERON"),
        _t(
            "esophagus",
            "Esophagus",
            "oesophagus",
            parent="thorax",
            code="UBERON:0001043",
            code_system="UBERON",
        ),
        _t(
            "breast",
            "Breast",
            "mammary",
            "mammary gland",
            parent="whole_body",
            code="UBERON:0000310",
            code_system="UBERON",
            description="Kept beside thorax, not under it, so that chest searches do not return mammography.",
        ),
        _t(
            "abdomen",
            "Abdomen",
            "abdominal",
            "abdominal organs",
            parent="whole_body",
            code="UBERON:0000916",
            code_system="UBERON",
        ),
        _t(
            "liver",
            "Liver",
            "hepatic",
            "hepatocystic triangle",
            parent="abdomen",
            code="UBERON:0002107",
            code_system="UBERON",
        ),
        _t(
            "gallbladder",
            "Gallbladder",
            "gall bladder",
            "cystic duct",
            "cystic artery",
            parent="abdomen",
            code="UBERON:0002110",
            code_system="UBERON",
        ),
        _t(
            "kidney",
            "Kidney",
            "kidneys",
            "renal",
            parent="abdomen",
            code="UBERON:0002113",
            code_system="UBERON",
        ),
        _t(
            "adrenal",
            "Adrenal gland",
            "adrenal",
            "adrenal glands",
            parent="abdomen",
            code="UBERON:0002369",
            code_system="UBERON",
        ),
        _t(
            "pancreas",
            "Pancreas",
            "pancreatic",
            parent="abdomen",
            code="UBERON:0001264",
            code_system="UBERON",
        ),
        _t("spleen", "Spleen", parent="abdomen", code="UBERON:0002106", code_system="UBERON"),
        _t(
            "gi_tract",
            "Gastrointestinal tract",
            "gi tract",
            "gastrointestinal",
            "digestive tract",
            "gut",
            parent="abdomen",
            code="UBERON:0001555",
            code_system="UBERON",
        ),
        _t("stomach", "Stomach", "gastric", parent="gi_tract", code="UBERON:0000945", code_system="UBERON"),
        _t(
            "small_bowel",
            "Small intestine",
            "small bowel",
            "small intestine",
            parent="gi_tract",
            code="UBERON:0002108",
            code_system="UBERON",
        ),
        _t(
            "colon",
            "Colon",
            "large bowel",
            "large intestine",
            "colorectal",
            "bowel",
            "polyp",
            "polyps",
            parent="gi_tract",
            code="UBERON:0001155",
            code_system="UBERON",
        ),
        _t("rectum", "Rectum", "rectal", parent="gi_tract", code="UBERON:0001052", code_system="UBERON"),
        _t("anus", "Anus", "anal", parent="gi_tract", code="UBERON:0001245", code_system="UBERON"),
        _t(
            "pelvis",
            "Pelvis",
            "pelvic",
            "pelvic region",
            parent="whole_body",
            code="UBERON:0002355",
            code_system="UBERON",
        ),
        _t(
            "prostate",
            "Prostate",
            "prostate gland",
            "seminal vesicles",
            "seminal vesicle",
            parent="pelvis",
            code="UBERON:0002367",
            code_system="UBERON",
        ),
        _t(
            "bladder",
            "Bladder",
            "urinary bladder",
            parent="pelvis",
            code="UBERON:0001255",
            code_system="UBERON",
        ),
        _t(
            "female_reproductive",
            "Female reproductive system",
            "female reproductive system",
            "gynecologic",
            "gynaecological",
            parent="pelvis",
            code="UBERON:0000474",
            code_system="UBERON",
        ),
        _t(
            "uterus",
            "Uterus",
            "uterine",
            "endometrium",
            parent="female_reproductive",
            code="UBERON:0000995",
            code_system="UBERON",
        ),
        _t(
            "cervix",
            "Cervix",
            "uterine cervix",
            "cervical",
            parent="female_reproductive",
            code="UBERON:0000002",
            code_system="UBERON",
        ),
        _t(
            "ovary",
            "Ovary",
            "ovaries",
            "ovarian",
            parent="female_reproductive",
            code="UBERON:0000992",
            code_system="UBERON",
        ),
        _t("vagina", "Vagina", parent="female_reproductive", code="UBERON:0000996", code_system="UBERON"),
        _t(
            "placenta",
            "Placenta",
            "fetal",
            "fetus",
            parent="female_reproductive",
            code="UBERON:0001987",
            code_system="UBERON",
        ),
        _t(
            "musculoskeletal",
            "Musculoskeletal system",
            "skeleton",
            "skeletal",
            "multi-bone",
            "bones",
            parent="whole_body",
            code="UBERON:0002204",
            code_system="UBERON",
        ),
        _t(
            "bone",
            "Bone",
            "bone tissue",
            "femoral heads",
            "femur",
            "pelvic bone",
            parent="musculoskeletal",
            code="UBERON:0001474",
            code_system="UBERON",
        ),
        _t("cartilage", "Cartilage", parent="musculoskeletal", code="UBERON:0002418", code_system="UBERON"),
        _t(
            "spine",
            "Spine",
            "vertebral column",
            "vertebrae",
            "lumbar vertebrae",
            "lumbar spine",
            "spinal",
            parent="musculoskeletal",
            code="UBERON:0001130",
            code_system="UBERON",
        ),
        _t(
            "intervertebral_disc",
            "Intervertebral disc",
            "intervertebral discs",
            parent="spine",
            code="UBERON:0001066",
            code_system="UBERON",
        ),
        _t(
            "limb",
            "Limb",
            "limbs",
            "extremities",
            "extremity",
            "arm",
            "leg",
            "calf",
            "elbow",
            "shoulder",
            parent="musculoskeletal",
            code="UBERON:0002101",
            code_system="UBERON",
        ),
        _t("knee", "Knee", parent="limb", code="UBERON:0001465", code_system="UBERON"),
        _t("hand", "Hand", "wrist", parent="limb", code="UBERON:0002398", code_system="UBERON"),
        _t("foot", "Foot", "feet", parent="limb", code="UBERON:0002387", code_system="UBERON"),
        _t("soft_tissue", "Soft tissue", parent="whole_body", code="UBERON:0003104", code_system="UBERON"),
        _t(
            "vessel",
            "Blood vessel",
            "vessel",
            "vessels",
            "vascular",
            "vessel structures",
            "eye vessel",
            parent="whole_body",
            code="UBERON:0001981",
            code_system="UBERON",
        ),
        _t(
            "nerve",
            "Peripheral nerve",
            "brachial plexus",
            "nerve",
            parent="whole_body",
            code="UBERON:0001021",
            code_system="UBERON",
        ),
        _t(
            "lymphatic",
            "Lymphatic system",
            "lymphatic",
            "lymph",
            "lymphatic system",
            "lymph node",
            "lymph nodes",
            "pelvic lymph nodes",
            "waldeyer",
            parent="whole_body",
            code="UBERON:0006558",
            code_system="UBERON",
        ),
        _t(
            "skin",
            "Skin",
            "cutaneous",
            "dermal",
            "skin lesion",
            parent="whole_body",
            code="UBERON:0002097",
            code_system="UBERON",
        ),
        _t(
            "blood",
            "Blood and bone marrow",
            "blood",
            "bone marrow",
            "hematopoietic",
            "haematological",
            code="UBERON:0002390",
            code_system="UBERON",
            description="Hematopoietic system: blood smears and marrow aspirates, usually under the microscope.",
        ),
        _t(
            "cell",
            "Cells",
            "cell",
            "cells",
            "nuclei",
            "nucleus",
            "lymphocyte",
            "lymphocytes",
            "platelet",
            "platelets",
            "gland",
            code="CL:0000000",
            code_system="CL",
            description="Cell-level imaging where no organ is stated.",
        ),
        _t(
            "non_anatomical",
            "Non-anatomical",
            "phantom",
            "phantoms",
            "instrument",
            "instruments",
            "surgical instrument",
            "surface",
            "artificial vessel",
            "porcine cadaver",
            description="Phantoms, instruments and other non-human-anatomy subjects.",
        ),
    ],
)

TASK = Vocabulary(
    "task",
    "Task",
    [
        _t("segmentation", "Segmentation", "seg", "segment", "semantic segmentation", "lab", "labeling"),
        _t("classification", "Classification", "cls", "class", "classify", "diagnosis", "mgmt", "grading"),
        _t(
            "detection",
            "Detection",
            "det",
            "detect",
            "object detection",
            "loc",
            "localization",
            "localisation",
            "lmk",
            "landmark",
            "landmarks",
        ),
        _t("registration", "Registration", "image registration", "alignment", "stereo matching"),
        _t(
            "regression",
            "Regression",
            "est",
            "estimation",
            "meas",
            "measurement",
            "quan",
            "quantification",
            "counting",
        ),
        _t(
            "prediction",
            "Prognosis / prediction",
            "pred",
            "prediction",
            "prognosis",
            "prog",
            "surv",
            "survival",
            "progression",
        ),
        _t(
            "reconstruction",
            "Reconstruction",
            "rec",
            "recon",
            "reconstruction",
            "denoising",
            "super-resolution",
        ),
        _t("tracking", "Tracking", "track", "trk", "tracking"),
        _t("generation", "Generation / synthesis", "gen", "syn", "synthesis", "generation"),
        _t("vqa", "Visual question answering", "vqa", "qa", "question answering"),
        _t("captioning", "Captioning / report generation", "caption", "captioning", "report generation"),
        _t("retrieval", "Retrieval", "retrieval", "image retrieval"),
        _t("quality_assessment", "Image quality assessment", "iqa", "quality assessment"),
        _t("atlas", "Atlas construction", "atlas"),
        _t("other", "Other task", "rest", "resting state", "other"),
    ],
)

DIM = Vocabulary(
    "dim",
    "Dimensionality",
    [
        _t("2D", "2D", "2d", "planar", "slice", "image", "2d+text"),
        _t("3D", "3D", "3d", "volumetric", "volume", "volumes", "3-d"),
        _t("4D", "4D", "4d", "3d+t", "dynamic", "cine"),
        _t("video", "Video", "video", "videos", "clip", "sequence"),
    ],
)

ACCESS = Vocabulary(
    "access",
    "Access",
    [
        _t("open", "Open", "public", "open access", "free", description="Downloadable without an account."),
        _t(
            "registration",
            "Registration",
            "account",
            "login",
            "sign-up",
            description="Needs an account or acceptance of terms on the host.",
        ),
        _t(
            "application",
            "Application",
            "request",
            "data use agreement",
            "dua",
            "approval",
            description="Needs an application reviewed by the data owner.",
        ),
        _t("unknown", "Unknown", "na", description="The survey could not tell how access works."),
    ],
)

LABELED = Vocabulary(
    "labeled",
    "Labels",
    [
        _t("true", "Labeled", "yes", "labeled", "labelled", "annotated", "1"),
        _t("false", "Unlabeled", "no", "unlabeled", "unlabelled", "not annotated", "0"),
    ],
)

SIZE = Vocabulary(
    "size",
    "Size (images or cases)",
    [
        _t("lt100", "Under 100", "<100", "tiny"),
        _t("100-1k", "100 to 999", "small"),
        _t("1k-10k", "1k to 9.9k", "medium"),
        _t("10k-100k", "10k to 99k", "large"),
        _t("100k+", "100k or more", ">=100k", "huge"),
        _t("unknown", "Unknown", "na"),
    ],
)

# Hosts: how a dataset is obtained depends on where it lives. `code` holds the matching hostname suffix.
HOST = Vocabulary(
    "host",
    "Host",
    [
        _t(
            "tcia",
            "The Cancer Imaging Archive",
            "tcia",
            "cancer imaging archive",
            code="cancerimagingarchive.net",
        ),
        _t("kaggle", "Kaggle", code="kaggle.com"),
        _t("github", "GitHub", code="github.com"),
        _t("openneuro", "OpenNeuro", code="openneuro.org"),
        _t("zenodo", "Zenodo", code="zenodo.org"),
        _t("huggingface", "Hugging Face", "hf", "hugging face hub", code="huggingface.co"),
        _t("grand_challenge", "Grand Challenge", "grand-challenge", code="grand-challenge.org"),
        _t("synapse", "Synapse", code="synapse.org"),
        _t("tianchi", "Tianchi (Aliyun)", "tianchi", "aliyun", code="tianchi.aliyun.com"),
        _t("physionet", "PhysioNet", code="physionet.org"),
        _t("figshare", "figshare", code="figshare.com"),
        _t("mendeley", "Mendeley Data", code="data.mendeley.com"),
        _t("opendatalab", "OpenDataLab", code="opendatalab"),
        _t("heywhale", "Heywhale", code="heywhale.com"),
        _t("doi", "DOI resolver", "doi", code="doi.org"),
        _t("codalab", "CodaLab", code="codalab"),
        _t("aicrowd", "AIcrowd", code="aicrowd.com"),
        _t("imageclef", "ImageCLEF", code="imageclef.org"),
        _t("nitrc", "NITRC", code="nitrc.org"),
        _t("university", "University or lab site", "academic", code=".edu"),
        _t("other", "Other site", "other"),
        _t("none", "No URL", "missing"),
    ],
)

LICENCE = Vocabulary(
    "licence",
    "Licence",
    [
        _t("CC-BY-4.0", "CC BY 4.0", "cc-by", "cc by", code="CC-BY-4.0", code_system="SPDX"),
        _t("CC-BY-3.0", "CC BY 3.0", "cc-by-3.0", "cc by 3.0", code="CC-BY-3.0", code_system="SPDX"),
        _t("CC-BY-SA-4.0", "CC BY-SA 4.0", "cc-by-sa", code="CC-BY-SA-4.0", code_system="SPDX"),
        _t("CC-BY-NC-4.0", "CC BY-NC 4.0", "cc-by-nc", code="CC-BY-NC-4.0", code_system="SPDX"),
        _t(
            "CC-BY-NC-3.0",
            "CC BY-NC 3.0",
            "cc-by-nc-3.0",
            "cc by-nc 3.0",
            code="CC-BY-NC-3.0",
            code_system="SPDX",
        ),
        _t(
            "LicenseRef-TCIA-NLM",
            "NLM terms (TCIA)",
            "nlm",
            "nlm terms",
            description="National Library of Medicine Terms and Conditions, as TCIA and IDC state for some series.",
        ),
        _t("CC-BY-NC-SA-4.0", "CC BY-NC-SA 4.0", "cc-by-nc-sa", code="CC-BY-NC-SA-4.0", code_system="SPDX"),
        _t("CC-BY-NC-ND-4.0", "CC BY-NC-ND 4.0", "cc-by-nc-nd", code="CC-BY-NC-ND-4.0", code_system="SPDX"),
        _t("CC0-1.0", "CC0 1.0", "cc0", "public domain", code="CC0-1.0", code_system="SPDX"),
        _t("MIT", "MIT", code="MIT", code_system="SPDX"),
        _t(
            "unknown",
            "Unknown",
            "na",
            "none",
            description="Neither the survey nor the dataset's source states a licence; check the host before reuse.",
        ),
    ],
)

FETCH = Vocabulary(
    "fetch",
    "Fetch",
    [
        _t(
            "automatic",
            "Automatic",
            "auto",
            "automated",
            description="A bundle job fetches it with no set-up (IDC, TCIA, OpenNeuro, Zenodo, figshare, ...).",
        ),
        _t(
            "credentials",
            "Needs the operator's account",
            "credential",
            "credentialed",
            "token",
            description="Fetched with this server's account on the host (Kaggle, Synapse, PhysioNet settings).",
        ),
        _t(
            "manual",
            "Manual",
            "none",
            description="You get the files (registration, approval, no file list) and attach them as a local source.",
        ),
    ],
)

QUALITY = Vocabulary(
    "quality",
    "Quality flags",
    [
        _t("none", "No flags", description="Nothing in the record contradicts itself or is missing."),
        _t(
            "count_unparseable",
            "Count unreadable",
            description="The image/case count is not a number (often a shifted column).",
        ),
        _t("count_zero", "Count is zero", description="The survey lists zero images or cases."),
        _t("count_missing", "Count unknown", description="The survey lists no image or case count."),
        _t(
            "count_approximate", "Count approximate", description="The count is a lower bound such as '200+'."
        ),
        _t("url_missing", "No URL", description="The record has no landing page."),
        _t("url_shared", "URL shared", description="Other datasets with different names point at this URL."),
        _t("year_missing", "Year unknown", description="No release year."),
        _t(
            "modality_unknown",
            "Modality unclear",
            description="The modality text names no imaging modality (e.g. 'Multi'); the survey table's is used.",
        ),
        _t("anatomy_unknown", "Anatomy unknown", description="No anatomy could be read from the record."),
        _t(
            "anatomy_from_name",
            "Anatomy from name",
            description="The anatomy field is empty; the body part named in the dataset's name is used.",
        ),
        _t("task_unknown", "Task unknown", description="No task could be read from the record."),
        _t(
            "task_ambiguous",
            "Task ambiguous",
            description="'Reg' means registration in some tables and regression in others; resolved by name.",
        ),
        _t(
            "disease_contradicts_anatomy",
            "Disease contradicts anatomy",
            description="The disease field names a body part unrelated to the stated anatomy.",
        ),
        _t(
            "modality_contradicts_anatomy",
            "Modality contradicts anatomy",
            description="E.g. fundus photography of something that is not an eye.",
        ),
        _t(
            "section_contradicts_modality",
            "Section contradicts modality",
            description="The survey table the row comes from is about another modality.",
        ),
        _t(
            "section_contradicts_dim",
            "Section contradicts dimensionality",
            description="A row of a 3D table that says 2D only, or the reverse.",
        ),
        _t(
            "labeled_without_task",
            "Labeled without task",
            description="Marked labeled but no task is stated.",
        ),
    ],
)

ALL: dict[str, Vocabulary] = {
    v.kind: v for v in (MODALITY, ANATOMY, TASK, DIM, ACCESS, LABELED, SIZE, HOST, LICENCE, FETCH, QUALITY)
}
