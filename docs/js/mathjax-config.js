// MathJax 3 settings for pymdownx.arithmatex (generic mode): typeset only the spans and
// blocks arithmatex marks, written as \( \) and \[ \].  The script itself is served from
// this site (assets/mathjax/, copied at build time), never from a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    // An unknown macro is a TeX error (a red box, counted by tests/test_docs_browser.py),
    // not silently printed in red.
    packages: {"[-]": ["noundefined"]},
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
