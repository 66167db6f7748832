"""Images and labels anywhere in a tree, paired by case or subject id: folder names read as words (image,
label and split folders), label and image words stripped from stems, ids compared without case, separators or
zero padding (`case_key`), and a pairing that never guesses between two candidates. Volumes, DICOM series
folders and 2D image/mask pictures pair alike."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.imaging.cases import Case, Split
from workers.imaging.layout_files import SPLIT_FOLDER_NAMES, is_dicom_file, is_image_file, split_suffix

# Folder names are read as words (`imagesTr` -> images, tr; `ISIC2018_Task1_Training_GroundTruth` -> isic,
# task, training, ground, truth): a folder with a label word holds labels, one with an image word images.
LABEL_FOLDER_WORDS = frozenset(
    {"label", "labels", "mask", "masks", "seg", "segs", "segmentation", "segmentations", "gt", "groundtruth"}
    | {"truth", "annotation", "annotations"}
)
IMAGE_FOLDER_WORDS = frozenset(
    {"image", "images", "img", "imgs", "scan", "scans", "volume", "volumes", "data", "input", "inputs"}
)
# nnU-Net's imagesTr / labelsTs: `tr` and `ts` name a split only next to an image or label word
_ROLE_SPLIT_WORDS = {"tr": Split.TRAIN, "ts": Split.TEST}
_LABEL_WORDS = r"seg|segs|segmentation|mask|masks|label|labels|gt|annotation|annot"
_IMAGE_WORDS = r"img|image|scan|vol|volume"
# `seg_X`, `mask-X`, `X_seg`, `X_label`, `X.seg` (3D Slicer's `X.seg.nrrd`), or a stem that is only the word
LABEL_AFFIX = re.compile(
    rf"^(?:{_LABEL_WORDS})(?:[_.-]+(?P<rest>.+))?$|^(?P<base>.+?)[_.-]+(?:{_LABEL_WORDS})$", re.IGNORECASE
)
IMAGE_AFFIX = re.compile(
    rf"^(?:{_IMAGE_WORDS})(?:[_.-]+(?P<rest>.+))?$|^(?P<base>.+?)[_.-]+(?:{_IMAGE_WORDS})$", re.IGNORECASE
)

IdKey = tuple[str | int, ...]


def case_key(text: str) -> IdKey:
    """An id as compared across folders: letters lower-cased, digit runs as numbers, separators dropped, so
    `Case7`, `case007` and `case_7` agree, and `patient_01` agrees with `Patient1`; `case_1_2` and `case_12`
    do not (the digit runs differ)."""
    return tuple(int(t) if t.isdigit() else t for t in re.findall(r"[a-z]+|\d+", text.lower()))


def _strip_affix(stem: str, pattern: re.Pattern[str]) -> tuple[str, bool]:
    """`stem` without the words `pattern` finds at its start or end (repeatedly: `seg_X_mask`), and whether
    there were any."""
    found = False
    while match := pattern.match(stem):
        found = True
        stem = match["rest"] or match["base"] or ""
        if not stem:
            break
    return stem, found


def _folder_words(name: str) -> list[str]:
    return re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())


@dataclass(frozen=True)
class _FolderRole:
    role: str | None  # "image", "label" or None
    split: Split | None
    plain: bool  # neither a role nor only a split: a subject, case or site folder (or a wrapper)


def _folder_role(name: str) -> _FolderRole:
    words = _folder_words(name)
    role = (
        "label"
        if LABEL_FOLDER_WORDS.intersection(words)
        else "image"
        if IMAGE_FOLDER_WORDS.intersection(words)
        else None
    )
    splits = [SPLIT_FOLDER_NAMES[w] for w in words if w in SPLIT_FOLDER_NAMES]
    if role is not None:
        splits += [_ROLE_SPLIT_WORDS[w] for w in words if w in _ROLE_SPLIT_WORDS]
        return _FolderRole(role, splits[0] if splits else None, False)
    if words and all(w in SPLIT_FOLDER_NAMES for w in words):
        return _FolderRole(None, splits[0], False)
    return _FolderRole(None, None, True)


@dataclass(frozen=True)
class _Item:
    """An image or label file (or DICOM series folder) as the pairing sees it."""

    path: Path
    stem: str
    name: IdKey  # the stem's id, image/label words stripped
    context: tuple[object, ...]  # the folders above it, image/label folders dropped, split folders by split
    plain_folders: tuple[str, ...]  # the subject / case / site folders above it, outermost first
    split: Split | None
    in_image_folder: bool


def _item(path: Path, root: Path, *, series: bool = False) -> tuple[_Item, bool]:
    """The item for `path` and whether it is a label: below a label folder (the deepest image or label folder
    decides), or, outside any label folder, named with a label word (`seg_X`, `X_mask`...)."""
    relative = path.relative_to(root)
    folders = relative.parts[:-1]
    stem = path.name if series else split_suffix(path)[0]
    roles = [_folder_role(f) for f in folders]
    deepest = next((r.role for r in reversed(roles) if r.role is not None), None)
    label_stem, label_words = _strip_affix(stem, LABEL_AFFIX)
    is_label = not series and (deepest == "label" or label_words)
    # both sides lose both kinds of word: `images/scan_17.nii` pairs with `masks/scan_17_mask.nii`
    name = _strip_affix(label_stem, IMAGE_AFFIX)[0]
    context: list[object] = []
    for folder, role in zip(folders, roles, strict=True):
        if role.split is not None:
            context.append(role.split)
        elif role.plain:
            context.append(case_key(folder))
    split = next((r.split for r in reversed(roles) if r.split is not None), None)
    plain = tuple(f for f, r in zip(folders, roles, strict=True) if r.plain)
    in_image_folder = any(r.role == "image" for r in roles)
    return _Item(path, stem, case_key(name), tuple(context), plain, split, in_image_folder), is_label


def _common_prefix(rows: list[tuple[str, ...]]) -> int:
    if not rows:
        return 0
    length = min(len(r) for r in rows)
    for index in range(length):
        if len({r[index] for r in rows}) > 1:
            return index
    return length


def _pair_by_keys(images: list[_Item], labels: list[_Item]) -> tuple[dict[int, int], set[int]]:
    """Image index -> label index, and the images left unpaired because the match was ambiguous.

    Three passes, each over what the previous ones left: the same id in the same folders (split folders and
    subject folders alike, image/label folders aside); the same id anywhere; an id equal to the other side's
    subject or case folder (`images/P1/scan.nii` and `labels/P1.nii`; only folders that differ between
    items count). In each pass a key shared by more than one image or more than one label pairs none of
    them, and an image reaching two labels (or a label reached by two images) is not paired: never a guess.
    """

    def folder_keys(items: list[_Item]) -> list[IdKey]:
        """Each item's nearest subject / case folder as an id; () when it has none, or only folders every
        item of its side sits in (wrappers, not subjects)."""
        varying = _common_prefix([item.plain_folders for item in items])
        return [case_key(i.plain_folders[-1]) if len(i.plain_folders) > varying else () for i in items]

    sides = ((images, folder_keys(images)), (labels, folder_keys(labels)))
    passes: tuple[Callable[[_Item, IdKey], list[object]], ...] = (
        lambda item, _folder: [(item.context, item.name)],
        lambda item, _folder: [item.name] if item.name else [],
        lambda item, folder: [k for k in {item.name, folder} if k],
    )
    pairs: dict[int, int] = {}
    taken: set[int] = set()
    ambiguous: set[int] = set()
    for keys_of in passes:
        image_keys: dict[object, set[int]] = defaultdict(set)
        label_keys: dict[object, set[int]] = defaultdict(set)
        for (items, folders), keys, done in zip(sides, (image_keys, label_keys), (pairs, taken), strict=True):
            for index, (item, folder) in enumerate(zip(items, folders, strict=True)):
                if index not in done:
                    for key in keys_of(item, folder):
                        keys[key].add(index)
        candidates: dict[int, set[int]] = defaultdict(set)
        for key, image_indices in image_keys.items():
            label_indices = label_keys.get(key)
            if not label_indices:
                continue
            if len(image_indices) == 1 and len(label_indices) == 1:
                candidates[next(iter(image_indices))].add(next(iter(label_indices)))
            else:
                ambiguous |= image_indices
        claims = Counter(label for found in candidates.values() for label in found)
        for image_index, found in candidates.items():
            label_index = next(iter(found))
            if len(found) == 1 and claims[label_index] == 1:
                pairs[image_index] = label_index
                taken.add(label_index)
            else:
                ambiguous.add(image_index)
    return pairs, ambiguous - set(pairs)


def _id_pair_items(root: Path) -> tuple[list[_Item], list[_Item]]:
    images: list[_Item] = []
    labels: list[_Item] = []
    series_folders: set[Path] = set()
    for path in sorted(root.rglob("*")):
        if any(part.startswith((".", "__MACOSX")) for part in path.relative_to(root).parts):
            continue
        if is_image_file(path):
            item, is_label = _item(path, root)
            (labels if is_label else images).append(item)
        elif path.is_file() and path.parent != root and is_dicom_file(path):
            series_folders.add(path.parent)
    for folder in sorted(series_folders):
        item, _ = _item(folder, root, series=True)
        roles = [_folder_role(f) for f in folder.relative_to(root).parts]
        # a DICOM folder below a label folder holds SEG/RTSTRUCT objects, a matter for another layout
        if not any(r.role == "label" for r in roles) and not _strip_affix(folder.name, LABEL_AFFIX)[1]:
            images.append(item)
    return images, labels


def id_pair_cases(root: Path, warnings: list[str] | None = None) -> list[Case]:
    """Images and labels anywhere in the tree, paired by case or subject id (_pair_by_keys): sibling folders
    (`images/` vs `masks/`, `scans/` vs `segmentations/`, in any case and at any depth, with parallel split
    folders below or above them), label words before or after the id (`seg_X`, `X_mask`, `X.seg.nrrd`), ids
    that differ in case, separators or zero padding. 2D pictures pair the same way and are segmentation cases.

    An image without a label stays a case (an official test set often ships none) if it sits in an image
    folder or beside a paired image; labels without an image are dropped. Ambiguous matches are not guessed:
    those images stay unlabelled (packaging then skips a 3D training case for want of a label map, with that
    reason) and `warnings` says which. Not this layout unless at least one pair is found."""
    images, labels = _id_pair_items(root)
    if not images or not labels:
        return []
    pairs, ambiguous = _pair_by_keys(images, labels)
    varying = _common_prefix([item.plain_folders for item in images])  # wrapper folders name no subject
    if not pairs:
        return []
    paired_folders = {images[index].path.parent for index in pairs}
    kept = [
        index
        for index, image in enumerate(images)
        if index in pairs or image.in_image_folder or image.path.parent in paired_folders
    ]
    stems = Counter(images[index].stem for index in kept)
    cases: list[Case] = []
    for index in kept:
        image = images[index]
        case_id = image.stem
        if stems[case_id] > 1:  # `images/train/case1` and `images/test/case1`
            folders = [f for f in image.path.relative_to(root).parts[:-1] if _folder_role(f).role is None]
            if image.split is not None and not any(_folder_role(f).split for f in folders):
                folders.append(image.split.value)  # the split came with `imagesTr` / `imagesTs`
            case_id = "_".join([*folders, image.stem])
        subject = image.plain_folders[varying] if len(image.plain_folders) > varying else case_id
        label = labels[pairs[index]].path if index in pairs else None
        cases.append(Case(case_id, subject, (image.path,), label, {}, image.split))
    if warnings is not None and ambiguous:
        examples = ", ".join(images[i].path.relative_to(root).as_posix() for i in sorted(ambiguous)[:5])
        more = f" and {len(ambiguous) - 5} more" if len(ambiguous) > 5 else ""
        warnings.append(
            f"{len(ambiguous)} image(s) left without a label: more than one label file (or image) shares "
            f"their id, so none was guessed ({examples}{more}); give an explicit layout to pair them"
        )
    return cases
