// Marks the page as scripted before it is drawn (CSS shows the JavaScript-only controls under html.js).
// Loaded without defer from <head>: the Content-Security-Policy allows no inline script.
document.documentElement.className = "js";
