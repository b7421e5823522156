"""A small grammar of brain MRI reports: Findings and Impression in varied wording.

A report describes what a radiologist sees — location, site, size (measured from the mask),
margin, cystic change, signal heterogeneity, mass effect — with synonyms, shuffled sentence
order, hedging, negations, abbreviations and the occasional typo. It never names the class (the
task's leak terms): that is the label a model must learn from the image. Two template
families exist: ``standard`` and ``narrative`` (the ``report-style`` shift: other phrasing,
centimetres, numbered impression).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from radpair.training.cohort.lesions import Lesion


@dataclass(frozen=True)
class Measurement:
    """Largest extents of the mask along the patient axes, mm."""

    transverse: float
    anteroposterior: float
    craniocaudal: float


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _appearance(lesion: Lesion) -> tuple[str, str, bool]:
    margin = "sharp" if lesion.margin_mm < 1.6 else "ill-defined" if lesion.margin_mm > 2.4 else "intermediate"
    signal = "heterogeneous" if lesion.heterogeneity > 0.12 else "mild" if lesion.heterogeneity > 0.07 else "homogeneous"
    return margin, signal, lesion.cyst is not None


_MARGIN = {
    "standard": {
        "sharp": ("well-circumscribed", "sharply marginated", "well-defined"),
        "intermediate": ("relatively well-defined", "partly circumscribed", "lobulated"),
        "ill-defined": ("ill-defined", "infiltrative-appearing", "poorly marginated"),
    },
    "narrative": {
        "sharp": ("circumscribed", "crisply demarcated", "discrete"),
        "intermediate": ("somewhat lobulated", "partially demarcated", "moderately defined"),
        "ill-defined": ("indistinctly marginated", "infiltrating", "blurred-margin"),
    },
}
_SIGNAL = {
    "standard": {"heterogeneous": ("heterogeneous", "markedly heterogeneous"), "mild": ("mildly heterogeneous",),
                 "homogeneous": ("homogeneous", "fairly uniform")},
    "narrative": {"heterogeneous": ("mottled", "patchy"), "mild": ("slightly variegated",),
                  "homogeneous": ("uniform", "even")},
}
_LESION_NOUN = {"standard": ("mass", "lesion", "space-occupying lesion"),
                "narrative": ("expansile abnormality", "focus of T2 prolongation", "mass-like region")}
_HEAD_NOUN = {"standard": ("lesion", "mass"), "narrative": ("abnormality", "lesion")}
_FLAIR = {"standard": ("T2/FLAIR hyperintense", "FLAIR-hyperintense", "FLAIR hyperintense"),
          "narrative": ("high FLAIR signal", "T2-bright", "FLAIR-bright")}
_CYST = {"standard": ("with a cystic component", "with an associated cyst", "containing a cystic portion"),
         "narrative": ("with fluid-filled cystic change", "harbouring a cyst", "with a cystic pocket")}
_NO_CYST = {"standard": ("No cystic component is seen.", "There is no associated cyst."),
            "narrative": ("Solid throughout without cystic change.", "No cyst identified.")}
_SITE_ABBREVIATIONS = {"left": "L", "right": "R"}
_NORMAL_FINDINGS = {
    "standard": (
        "The ventricles are normal in size and configuration.", "No midline shift.",
        "Grey-white matter differentiation is preserved.", "No extra-axial collection.",
        "The basal cisterns are patent.", "The visualized paranasal sinuses and mastoid air cells are clear.",
        "Normal flow voids are present in the major intracranial vessels.",
    ),
    "narrative": (
        "Ventricular system of normal calibre.", "Midline structures are central.",
        "Cortical ribbon unremarkable.", "No subdural or epidural fluid.",
        "Skull base and calvarium unremarkable.", "Orbits grossly normal.",
    ),
}


def _size_text(m: Measurement, style: str, rng: np.random.Generator) -> str:
    dims = (m.anteroposterior, m.transverse, m.craniocaudal)
    if style == "narrative":
        values = " x ".join(f"{d / 10:.1f}" for d in dims)
        return _pick(rng, (f"spanning {values} cm (AP x TR x CC)", f"approx. {values} cm in AP, transverse and CC dimension"))
    values = " x ".join(f"{d:.0f}" for d in dims)
    return _pick(rng, (f"measuring {values} mm (AP x TR x CC)", f"measuring approximately {values} mm",
                       f"{values} mm in AP x TR x CC dimensions"))


def _site_text(site: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.15:
        return " ".join(_SITE_ABBREVIATIONS.get(word, word) for word in site.split())
    return site


def _typo(text: str, rng: np.random.Generator) -> str:
    words = [(m.start(), m.end()) for m in re.finditer(r"[a-z]{6,}", text)]
    if not words:
        return text
    start, end = words[int(rng.integers(len(words)))]
    i = int(rng.integers(start + 1, end - 2))
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def lesion_report(lesion: Lesion, size: Measurement, volume_mm3: float, style: str,
                  rng: np.random.Generator, leak_terms: Sequence[str]) -> dict[str, str]:
    margin, signal, cystic = _appearance(lesion)
    noun = _pick(rng, _LESION_NOUN[style])
    head_noun = _pick(rng, _HEAD_NOUN[style])
    site = _site_text(lesion.site, rng)
    compartment = f" {lesion.location_phrase}" if rng.random() < 0.8 and lesion.location_phrase else ""
    lead = _pick(rng, ("There is a", "A", "Redemonstrated is a", "Noted is a") if style == "standard"
                 else ("Seen is a", "Imaging shows a", "Present is a"))
    adjective = _pick(rng, _MARGIN[style][margin])
    if lead.endswith(" a") and adjective[0] in "aeiou":
        lead += "n"
    first = (f"{lead} {adjective} {_pick(rng, _FLAIR[style])} {noun} "
             f"{_pick(rng, ('centred in', 'involving', 'within', 'arising from'))} the {site}{compartment}, "
             f"{_size_text(size, style, rng)}.")
    findings = [first]
    details = [
        f"Internal signal is {_pick(rng, _SIGNAL[style][signal])}.",
        (f"The {head_noun} is seen {_pick(rng, _CYST[style])}." if cystic else _pick(rng, _NO_CYST[style])),
    ]
    large = size.anteroposterior * size.transverse * size.craniocaudal > 30000
    if lesion.in_posterior_fossa:
        details.append("There is mild effacement of the fourth ventricle." if large
                       else _pick(rng, ("The fourth ventricle is patent.", "No effacement of the 4th ventricle.")))
        details.append(_pick(rng, ("Mild obstructive hydrocephalus.", "Mild ventriculomegaly, likely obstructive."))
                       if large and rng.random() < 0.6 else _pick(rng, ("No hydrocephalus.", "No evidence of hydrocephalus.")))
    else:
        details.append(_pick(rng, ("Mild local mass effect without midline shift.", "Mild regional sulcal effacement."))
                       if large else _pick(rng, ("No significant mass effect.", "No midline shift.")))
        details.append(_pick(rng, ("No hydrocephalus.", "Ventricles are not dilated.")))
    if rng.random() < 0.5:
        details.append(f"Estimated volume {_pick(rng, ('approximately', 'about', 'roughly'))} {volume_mm3 / 1000:.1f} mL.")
    rng.shuffle(details)
    dilated = any("ydrocephalus." in d and not d.startswith("No") or "ventriculomegaly" in d for d in details)
    pool = [s for s in _NORMAL_FINDINGS[style] if s not in details and not (dilated and "entric" in s)]
    background = list(rng.choice(pool, size=int(rng.integers(1, 4)), replace=False))
    findings += details + background + ([_pick(rng, ("No additional lesions are identified.", "No other focal abnormality."))]
                                        if rng.random() < 0.6 else [])
    hedge = _pick(rng, ("most consistent with", "likely representing", "suggestive of", "in keeping with", "favoured to represent"))
    neoplasm = _pick(rng, ("a low-grade glial neoplasm", "a low-grade glioma", "a low-grade glial tumour"))
    if cystic and lesion.in_posterior_fossa and margin != "ill-defined":
        differential = "pilocytic astrocytoma is a leading consideration"
    elif not lesion.in_posterior_fossa and cystic:
        differential = "differential includes ganglioglioma and pleomorphic xanthoastrocytoma"
    else:
        differential = _pick(rng, ("differential includes pilocytic astrocytoma", "differential includes diffuse low-grade glioma",
                                   "a glioneuronal tumour is less likely"))
    where = _pick(rng, (f"{lesion.location.replace('-', ' ')} {head_noun}", f"{head_noun} of the {lesion.site}"))
    if style == "narrative":
        impression = [f"1. {where.capitalize()}, {hedge} {neoplasm}; {differential}.",
                      "2. " + _pick(rng, ("Tissue sampling suggested.", "Correlation with histopathology advised.",
                                          "Recommend follow-up MRI with contrast."))]
        text_impression = "\n".join(impression)
    else:
        impression = [f"{where[0].upper()}{where[1:]} {hedge} {neoplasm}.", f"Possibly {differential}." if rng.random() < 0.4
                      else f"{differential[0].upper()}{differential[1:]}."]
        if rng.random() < 0.5:
            impression.append(_pick(rng, ("Recommend correlation with contrast-enhanced imaging.", "Neurosurgical correlation advised.")))
        text_impression = " ".join(impression)
    sections = {"Findings": " ".join(findings), "Impression": text_impression}
    return _finish(sections, rng, leak_terms)


def normal_report(style: str, rng: np.random.Generator, leak_terms: Sequence[str]) -> dict[str, str]:
    background = list(rng.choice(_NORMAL_FINDINGS[style], size=int(rng.integers(3, 6)), replace=False))
    negations = ["No focal parenchymal signal abnormality.", _pick(rng, ("No hydrocephalus.", "No evidence of hydrocephalus.")),
                 _pick(rng, ("No intracranial mass lesion.", "No mass or mass effect."))]
    findings = negations + background
    rng.shuffle(findings)
    impression = (_pick(rng, ("1. Normal MRI of the brain.", "1. No intracranial abnormality demonstrated."))
                  if style == "narrative" else _pick(rng, ("Normal MRI brain.", "No acute or focal intracranial abnormality.",
                                                           "Unremarkable MRI of the brain; no mass lesion.")))
    return _finish({"Findings": " ".join(findings), "Impression": impression}, rng, leak_terms)


def _finish(sections: dict[str, str], rng: np.random.Generator, leak_terms: Sequence[str]) -> dict[str, str]:
    if rng.random() < 0.12:
        sections["Findings"] = _typo(sections["Findings"], rng)
    leak = re.compile("|".join(re.escape(t) for t in leak_terms), re.IGNORECASE) if leak_terms else None
    for text in sections.values():
        if leak is not None and leak.search(text):
            raise AssertionError(f"report grammar produced a class term: {text!r}")
    return sections


# Section headings of the flat text: the code meanings of the SR's section containers (DCM 121070
# "Findings", DCM 121072 "Impressions"), which is how listener.reports titles them, so a report
# reads the same from a cohort folder and from radpair's archive.
HEADINGS = {"Findings": "Findings", "Impression": "Impressions"}


def report_text(sections: dict[str, str]) -> str:
    """The report as one text, exactly as listener.reports flattens its SR."""
    return "\n\n".join(f"{HEADINGS[title]}:\n{body}" for title, body in sections.items())
