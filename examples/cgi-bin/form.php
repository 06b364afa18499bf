<?php
// A PHP page run by php-cgi: a form, a query argument and a cookie that counts visits.
$visits = (int)($_COOKIE["visits"] ?? 0) + 1;
setcookie("visits", (string)$visits, ["path" => "/", "httponly" => true, "samesite" => "Lax"]);
$h = fn($s) => htmlspecialchars((string)$s, ENT_QUOTES);
$color = $_POST["color"] ?? null;
?>
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>PHP over CGI</title></head>
<body>
<h1>PHP <?= $h(PHP_VERSION) ?> over CGI</h1>
<p>Visit number <?= $visits ?> (a cookie keeps count).</p>
<?php if (isset($_GET["q"])): ?><p>You asked for <q><?= $h($_GET["q"]) ?></q>.</p><?php endif; ?>
<?php if ($color !== null): ?><p class="picked">You picked <?= $h($color) ?>.</p><?php endif; ?>
<form method="post"><label>A colour <input name="color"></label> <button>Send</button></form>
<p>SCRIPT_NAME <?= $h($_SERVER["SCRIPT_NAME"]) ?>, PATH_INFO <?= $h($_SERVER["PATH_INFO"] ?? "") ?></p>
</body></html>
