#!/usr/bin/perl
# A CGI script in plain Perl: shows a few CGI variables and greets whoever posts the form.
use strict;
use warnings;

sub esc { my $s = shift // ""; $s =~ s/&/&amp;/g; $s =~ s/</&lt;/g; $s =~ s/>/&gt;/g; $s =~ s/"/&quot;/g; return $s; }
sub field {
    my ($data, $name) = @_;
    for my $pair (split /[&;]/, $data // "") {
        my ($k, $v) = split /=/, $pair, 2;
        next unless defined $k && $k eq $name;
        $v //= "";
        $v =~ tr/+/ /;
        $v =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
        return $v;
    }
    return undef;
}

my $body = "";
if (($ENV{REQUEST_METHOD} // "") eq "POST") {
    read(STDIN, $body, $ENV{CONTENT_LENGTH} // 0);
}
my $name = field($body, "name");
my $greeting = defined $name && $name ne "" ? "<p class=hi>Hello, " . esc($name) . "!</p>" : "";

print "Content-Type: text/html; charset=utf-8\n\n";
print <<"HTML";
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Perl over CGI</title></head>
<body>
<h1>Perl over CGI</h1>
$greeting
<form method="post"><label>Your name <input name="name"></label> <button>Greet me</button></form>
<table>
HTML
for my $var (qw(REQUEST_METHOD SCRIPT_NAME PATH_INFO QUERY_STRING SERVER_SOFTWARE REMOTE_ADDR)) {
    printf "<tr><th>%s</th><td>%s</td></tr>\n", $var, esc($ENV{$var});
}
print "</table>\n<p>Perl $^V</p>\n</body></html>\n";
